//! burnish-model.

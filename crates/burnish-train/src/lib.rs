//! burnish-train.

//! burnish-losses.

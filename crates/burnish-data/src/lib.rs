//! burnish-data.

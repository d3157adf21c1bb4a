//! chat (placeholder while it is written).
fn main() {}

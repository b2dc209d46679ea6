//! Attested inference serving (DESIGN.md §7).

pub mod kserve;

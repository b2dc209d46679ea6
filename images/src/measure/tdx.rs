//! TDX MRTD from TDVF metadata (in progress).

//! flowstage

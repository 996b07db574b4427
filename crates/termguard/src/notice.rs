//! The one normalized type every notice source produces.

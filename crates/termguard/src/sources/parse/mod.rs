//! Pure parsers: message bytes → `Notice` or a typed error.

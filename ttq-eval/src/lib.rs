//! ttq-eval

//! Tests of the kubernetes source.

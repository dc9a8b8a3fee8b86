//! `dmtcp-restart`: recreates a checkpointed computation from its images.
//!
//! This crate is the command line only: it parses the options, answers
//! `--inspect` and `--merge` from the images alone, and hands a restart to
//! [`dmtcp_supervisor::roles::restart`], which validates the images, creates one
//! parked shell per process in a fresh pid (and user) namespace, turns each
//! shell into its process and supervises the restarted computation exactly
//! like a launched one.

pub mod cli;

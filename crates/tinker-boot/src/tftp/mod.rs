//! TFTP

//! `rkvm bench` and `rkvm compare` (filled in next).

use std::path::Path;

use crate::Failure;
use crate::args::BenchArgs;

/// `rkvm bench`.
pub(crate) fn bench(_args: &BenchArgs) -> Result<(), Failure> {
    Err(Failure::Usage("rkvm bench is not there yet".into()))
}

/// `rkvm compare`.
pub(crate) fn compare(_left: &Path, _right: &Path) -> Result<String, Failure> {
    Err(Failure::Usage("rkvm compare is not there yet".into()))
}

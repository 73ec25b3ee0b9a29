use crate::expr::FnSpec;

pub(crate) static SPECS: &[FnSpec] = &[];

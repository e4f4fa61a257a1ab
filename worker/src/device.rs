//! The `--device` argument: which candle backend runs the model.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Metal,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}` (expected cpu, cuda:N or metal)")]
    Unknown(String),
    #[error(
        "cannot open device {spec}: {source} (was the worker built with the `cuda` or `metal` feature?)"
    )]
    Open {
        spec: DeviceSpec,
        source: candle_core::Error,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "metal" => Ok(DeviceSpec::Metal),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal => f.write_str("metal"),
        }
    }
}

impl DeviceSpec {
    pub fn open(self) -> Result<Device, DeviceError> {
        let opened = match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => Device::new_cuda(n),
            DeviceSpec::Metal => Device::new_metal(0),
        };
        opened.map_err(|source| DeviceError::Open { spec: self, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda:1", DeviceSpec::Cuda(1)),
            ("metal", DeviceSpec::Metal),
        ] {
            let parsed: DeviceSpec = text.parse().expect("parses");
            assert_eq!(parsed, spec);
            assert_eq!(parsed.to_string(), text);
        }
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}

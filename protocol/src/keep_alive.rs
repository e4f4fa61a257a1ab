//! How long a worker started on demand stays loaded without requests, in Ollama's
//! forms: a duration (`"5m"`, `"30s"`, `"1h30m"`, `"500ms"`), a number of seconds
//! (`300`), `0` (unload as soon as the request ends) or any negative number (never).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unloaded for idleness (`-1`).
    Forever,
    /// Unloaded once no request has run for this long.
    For(Duration),
}

impl Default for KeepAlive {
    /// Ollama's default: five minutes.
    fn default() -> Self {
        KeepAlive::For(Duration::from_secs(300))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a keep_alive: give a duration such as \"5m\", \"30s\" or \"1h30m\", a number of seconds, 0 (unload after the request) or -1 (never unload)"
)]
pub struct InvalidKeepAlive(pub String);

impl KeepAlive {
    /// The idle time after which the worker goes, `None` for never.
    pub fn idle_limit(self) -> Option<Duration> {
        match self {
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(d),
        }
    }

    fn from_seconds(seconds: f64) -> Result<KeepAlive, InvalidKeepAlive> {
        if seconds < 0.0 {
            Ok(KeepAlive::Forever)
        } else {
            Duration::try_from_secs_f64(seconds)
                .map(KeepAlive::For)
                .map_err(|_| InvalidKeepAlive(seconds.to_string()))
        }
    }
}

impl FromStr for KeepAlive {
    type Err = InvalidKeepAlive;

    fn from_str(text: &str) -> Result<KeepAlive, InvalidKeepAlive> {
        let invalid = || InvalidKeepAlive(text.to_owned());
        let trimmed = text.trim();
        if let Ok(seconds) = trimmed.parse::<f64>() {
            return if seconds.is_finite() {
                KeepAlive::from_seconds(seconds)
            } else {
                Err(invalid())
            };
        }
        if let Some(rest) = trimmed.strip_prefix('-') {
            // A negative duration ("-1m") means never, as in Ollama.
            return rest.parse::<KeepAlive>().map(|_| KeepAlive::Forever);
        }
        let mut total = Duration::ZERO;
        let mut rest = trimmed;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .map_or(rest.len(), |i| digits + i);
            let unit = match &rest[digits..unit_end] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(invalid()),
            };
            total += Duration::try_from_secs_f64(number * unit).map_err(|_| invalid())?;
            rest = &rest[unit_end..];
        }
        Ok(KeepAlive::For(total))
    }
}

impl fmt::Display for KeepAlive {
    /// The shortest form that parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("-1"),
            KeepAlive::For(d) if d.subsec_nanos() % 1_000_000 != 0 => {
                write!(f, "{}s", d.as_secs_f64())
            }
            KeepAlive::For(d) if d.subsec_millis() != 0 => write!(f, "{}ms", d.as_millis()),
            KeepAlive::For(d) => match d.as_secs() {
                0 => f.write_str("0"),
                s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                s if s % 60 == 0 => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            },
        }
    }
}

impl Serialize for KeepAlive {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeepAlive, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Seconds(f64),
            Text(String),
        }
        match Form::deserialize(deserializer)? {
            Form::Seconds(seconds) if seconds.is_finite() => {
                KeepAlive::from_seconds(seconds).map_err(serde::de::Error::custom)
            }
            Form::Seconds(seconds) => Err(serde::de::Error::custom(InvalidKeepAlive(
                seconds.to_string(),
            ))),
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollamas_forms_parse() {
        let secs = |s| KeepAlive::For(Duration::from_secs(s));
        for (text, want) in [
            ("5m", secs(300)),
            ("30s", secs(30)),
            ("1h30m", secs(5400)),
            ("0", secs(0)),
            ("300", secs(300)),
            ("-1", KeepAlive::Forever),
            ("-5m", KeepAlive::Forever),
            ("500ms", KeepAlive::For(Duration::from_millis(500))),
            ("1.5s", KeepAlive::For(Duration::from_millis(1500))),
        ] {
            assert_eq!(text.parse::<KeepAlive>(), Ok(want), "{text}");
        }
        for bad in ["", "m", "5 minutes", "5d", "1e400", "NaN", "s5"] {
            let error = bad.parse::<KeepAlive>().expect_err(bad);
            assert!(error.to_string().contains("\"5m\""), "{error}");
        }
    }

    #[test]
    fn json_takes_numbers_and_strings_and_round_trips() {
        let from = |json: &str| serde_json::from_str::<KeepAlive>(json);
        assert_eq!(from("0").expect("parses"), KeepAlive::For(Duration::ZERO));
        assert_eq!(from("-1").expect("parses"), KeepAlive::Forever);
        assert_eq!(
            from("90").expect("parses"),
            KeepAlive::For(Duration::from_secs(90))
        );
        assert_eq!(from("\"5m\"").expect("parses"), KeepAlive::default());
        assert!(from("\"soon\"").is_err());
        assert!(from("true").is_err());
        for value in [
            KeepAlive::Forever,
            KeepAlive::default(),
            KeepAlive::For(Duration::from_secs(90)),
            KeepAlive::For(Duration::from_secs(7200)),
            KeepAlive::For(Duration::from_millis(1500)),
            KeepAlive::For(Duration::ZERO),
            KeepAlive::For(Duration::from_nanos(1_000_001)),
        ] {
            let json = serde_json::to_string(&value).expect("serialises");
            assert_eq!(from(&json).expect("parses"), value, "{json}");
        }
    }
}

//! How a failed command ends: the exit code (0 ok, 1 operation failed, 2 bad usage or
//! invalid input) and the `error: ...` line on stderr.
//!
//! Commands return `anyhow::Error`; the code is decided by what the chain holds: a
//! [`UsageError`] (the user's input is wrong) or an [`ApiError`] whose gRPC code says the
//! request was invalid means 2, anything else 1.

use std::fmt;

use tonic::Code;

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// The user's input is wrong (a Compose error, a bad argument): exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A controller refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            // The controller's message already says what was wrong with the request.
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
                f.write_str(&self.message)
            }
            code if self.message.is_empty() => write!(f, "controller answered {code:?}"),
            code => write!(f, "controller answered {code:?}: {}", self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// The exit code for a command that failed with `err`.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return EXIT_USAGE;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return match api.code {
                Code::InvalidArgument | Code::NotFound => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
        }
    }
    EXIT_FAILED
}

/// `error: what: why: ...`, the whole context chain on one line.
pub fn render(err: &anyhow::Error) -> String {
    format!("error: {err:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: Code, msg: &str) -> anyhow::Error {
        anyhow::Error::new(ApiError {
            code,
            message: msg.into(),
        })
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            exit_code(&anyhow::Error::new(UsageError("bad".into()))),
            EXIT_USAGE
        );
        assert_eq!(
            exit_code(&api(Code::InvalidArgument, "x").context("scale web")),
            EXIT_USAGE
        );
        assert_eq!(exit_code(&api(Code::NotFound, "x")), EXIT_USAGE);
        assert_eq!(exit_code(&api(Code::Internal, "x")), EXIT_FAILED);
        assert_eq!(exit_code(&api(Code::Unavailable, "x")), EXIT_FAILED);
        assert_eq!(exit_code(&anyhow::anyhow!("io")), EXIT_FAILED);
    }

    #[test]
    fn messages_carry_the_context_chain() {
        let err = api(Code::NotFound, "no service `web` in any stack").context("scale web");
        assert_eq!(
            render(&err),
            "error: scale web: no service `web` in any stack"
        );
        let err = api(Code::Internal, "disk full").context("deploy stack hello");
        assert_eq!(
            render(&err),
            "error: deploy stack hello: controller answered Internal: disk full"
        );
    }
}

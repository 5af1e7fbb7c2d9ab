//! External commands (freeze/thaw hooks), run through duct so a failure's stderr and
//! command line reach the error message.
use crate::error::{Error, Result};

/// Runs `argv` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(argv: &[String]) -> Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::InvalidArgument("empty command".into()))?;
    let command = argv.join(" ");
    let out = duct::cmd(program, args)
        .stderr_capture()
        .stdout_null()
        .unchecked()
        .run()
        .map_err(|e| Error::Command {
            command: command.clone(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_command_and_stderr() {
        let argv: Vec<String> = ["sh", "-c", "echo frozen-fs-busy >&2; exit 3"]
            .map(String::from)
            .to_vec();
        let e = run(&argv).unwrap_err().to_string();
        assert!(
            e.contains("sh -c") && e.contains("frozen-fs-busy") && e.contains('3'),
            "{e}"
        );
        run(&["true".to_string()]).unwrap();
    }
}

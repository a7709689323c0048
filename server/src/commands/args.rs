//! `Args`: a cursor over a request's arguments, the only way command parsers read them.

use bytes::Bytes;

use crate::error::CommandError;
use crate::protocol::request::parse_i64;

/// Cursor over the arguments after the command (and subcommand) name.
#[derive(Debug)]
pub struct Args<'a> {
    args: &'a [Bytes],
    pos: usize,
    /// Full command name for arity errors, such as `CLIENT|SETNAME`.
    name: &'static str,
}

impl<'a> Args<'a> {
    pub fn new(args: &'a [Bytes], name: &'static str) -> Self {
        Args { args, pos: 0, name }
    }

    /// Arguments not read yet.
    pub fn remaining(&self) -> usize {
        self.args.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next argument, if any.
    pub fn next_opt(&mut self) -> Option<&'a Bytes> {
        let arg = self.args.get(self.pos)?;
        self.pos += 1;
        Some(arg)
    }

    /// The next argument.
    ///
    /// # Errors
    ///
    /// `ERR wrong number of arguments for '<cmd>' command` when there is none.
    pub fn next_bytes(&mut self) -> Result<&'a Bytes, CommandError> {
        self.next_opt().ok_or_else(|| self.arity_error())
    }

    /// The next argument as text; invalid UTF-8 is replaced, which is what error messages want.
    pub fn next_lossy(&mut self) -> Result<String, CommandError> {
        Ok(String::from_utf8_lossy(self.next_bytes()?).into_owned())
    }

    /// The next argument as a signed 64-bit integer in Redis's strict syntax.
    ///
    /// # Errors
    ///
    /// `ERR value is not an integer or out of range`.
    pub fn next_i64(&mut self) -> Result<i64, CommandError> {
        parse_i64(self.next_bytes()?).ok_or(CommandError::NotInteger)
    }

    /// Consumes the next argument if it equals `keyword`, ignoring ASCII case.
    pub fn eat(&mut self, keyword: &str) -> bool {
        match self.args.get(self.pos) {
            Some(arg) if arg.eq_ignore_ascii_case(keyword.as_bytes()) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// Every argument not read yet.
    pub fn rest(&mut self) -> &'a [Bytes] {
        let rest = &self.args[self.pos..];
        self.pos = self.args.len();
        rest
    }

    /// Checks that every argument was read.
    ///
    /// # Errors
    ///
    /// `ERR syntax error` when some were not.
    pub fn finish(&self) -> Result<(), CommandError> {
        if self.is_empty() { Ok(()) } else { Err(CommandError::Syntax) }
    }

    /// The arity error of this command.
    pub fn arity_error(&self) -> CommandError {
        CommandError::WrongArity(self.name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_in_order() {
        let raw: Vec<Bytes> = ["limit", "10", "x"].iter().map(|s| Bytes::from(*s)).collect();
        let mut args = Args::new(&raw, "X");
        assert!(!args.eat("OFFSET"));
        assert!(args.eat("LIMIT"));
        assert_eq!(args.next_i64().unwrap(), 10);
        assert_eq!(args.finish(), Err(CommandError::Syntax));
        assert_eq!(args.next_i64(), Err(CommandError::NotInteger));
        assert_eq!(args.next_bytes(), Err(CommandError::WrongArity("X".into())));
        assert!(args.finish().is_ok());
    }
}

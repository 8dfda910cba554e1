//! The command lines' shared grammar: `--flag value`, `--flag=value`, and short flags with
//! their value in the next argument.

/// The arguments of a command line, flag by flag.
pub struct Flags<I: Iterator<Item = String>>(I);

impl<I: Iterator<Item = String>> Flags<I> {
    pub fn new(args: impl IntoIterator<Item = String, IntoIter = I>) -> Self {
        Flags(args.into_iter())
    }

    /// The next flag, with its value when given inline (`--flag=value`).
    pub fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        let arg = self.0.next()?;
        Some(match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.into())),
            _ => (arg, None),
        })
    }

    /// The value of `flag`: the inline one, or the next argument.
    pub fn value(&mut self, flag: &str, inline: &Option<String>) -> Result<String, String> {
        inline
            .clone()
            .or_else(|| self.0.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

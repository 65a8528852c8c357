//! What a command that looks for problems (`check`, `status`, `audit --verify`) hands back: its
//! report, always printed on standard output, and how many problems it found, which decides the
//! exit status (docs: knockd(8), EXIT STATUS). A report is not an error: the command ran.

/// A command's report and the number of problems in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The text for standard output.
    pub text: String,
    /// Problems found (0: all is well).
    pub problems: usize,
}

impl Report {
    /// A report that found nothing wrong.
    pub fn clean(text: String) -> Report {
        Report { text, problems: 0 }
    }

    /// Whether the command found no problem.
    pub fn is_clean(&self) -> bool {
        self.problems == 0
    }
}

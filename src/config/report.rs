//! Every configuration error at once, each naming its file and dotted key:
//! what `check-config` prints and what `run` refuses to start with.
//!
//! [`Overrides::load_all`] parses the file (every key of the wrong type or
//! an unknown key, [`Config::from_toml_all`]); [`ConfigReport::check`]
//! checks every section ([`Config::check_all`]); [`journal_writable`] and
//! [`access_log_writable`] are the checks that look at the machine: the
//! journal's directory must take a new file, and the access log's file must
//! open for appending, so that a permission problem shows in `check-config`
//! rather than after the gateway printed `listening`.
//!
//! A key set by a flag or an environment variable is still reported under
//! the file's name: the message names the key, which says which flag.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Overrides};

/// The errors of one configuration, with the file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReport {
    /// The `--config` file, if any.
    pub file: Option<PathBuf>,
    /// Every error found; never empty.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigReport {
    /// One error per line: `FILE: KEY: MESSAGE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &self.file {
                Some(file) => write!(f, "{}: {e}", file.display())?,
                None => write!(f, "{e}")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigReport {}

impl Overrides {
    /// Loads the file and the flags, reporting every key that does not parse
    /// at once; [`ConfigReport::check`] then checks every section.
    pub fn load_all(&self) -> Result<Config, ConfigReport> {
        let report = |errors| ConfigReport {
            file: self.config.clone(),
            errors,
        };
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    report(vec![ConfigError::new(
                        "--config",
                        format!("cannot read {}: {e}", path.display()),
                    )])
                })?;
                match Config::from_toml_salvaged(&text) {
                    (Some(config), errors) if errors.is_empty() => config,
                    (salvaged, mut errors) => {
                        // What did parse is checked too, so that one run
                        // shows every error; a key already reported is not
                        // reported again.
                        if let Some(mut config) = salvaged {
                            self.apply(&mut config);
                            for e in config.check_all() {
                                if !errors.iter().any(|p| p.key == e.key) {
                                    errors.push(e);
                                }
                            }
                        }
                        return Err(report(errors));
                    }
                }
            }
            None => Config::default(),
        };
        self.apply(&mut config);
        Ok(config)
    }
}

impl ConfigReport {
    /// Every section's error of `config` (from `file`), or `Ok`.
    pub fn check(config: &Config, file: Option<&Path>) -> Result<(), ConfigReport> {
        let errors = config.check_all();
        if errors.is_empty() {
            return Ok(());
        }
        Err(ConfigReport {
            file: file.map(Path::to_path_buf),
            errors,
        })
    }
}

impl ConfigReport {
    /// [`ConfigReport::check`] and [`journal_writable`] together: what
    /// `check-config` reports, every error of the file and the journal's
    /// directory in one run.
    pub fn check_with_journal(config: &Config, file: Option<&Path>) -> Result<(), ConfigReport> {
        let mut errors = config.check_all();
        if let Err(e) = journal_writable(&config.store.journal) {
            errors.push(e);
        }
        if let Some(path) = &config.log.access_log_path {
            if !errors.iter().any(|e| e.key == "log.access_log_path") {
                if let Err(e) = access_log_writable(path) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(ConfigReport {
            file: file.map(Path::to_path_buf),
            errors,
        })
    }
}

/// Whether the journal (`store.journal`) can be written: its directory, or
/// the nearest one that exists when it is still to be made, must take a new
/// file, and an existing journal must open for appending. Probes with a
/// file it removes at once; never touches the journal's contents.
pub fn journal_writable(journal: &Path) -> Result<(), ConfigError> {
    let fail = |what: String| Err(ConfigError::new("store.journal", what));
    if journal.exists() {
        if let Err(e) = std::fs::OpenOptions::new().append(true).open(journal) {
            return fail(format!(
                "{} cannot be opened for writing: {e}",
                journal.display()
            ));
        }
    }
    let mut dir = match journal.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => dir = PathBuf::from("."),
        }
    }
    if !dir.is_dir() {
        return fail(format!("{} is not a directory", dir.display()));
    }
    probe_writable(&dir)
        .or_else(|e| fail(format!("directory {} is not writable: {e}", dir.display())))
}

/// Whether `dir` takes a new file: one is created and removed at once.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".revgate-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Whether the access log's file (`log.access_log_path`) can be appended
/// to, as the gateway will open it: an existing file must open for
/// appending (its contents untouched), a new one's directory must exist
/// (nothing makes it) and take a new file (probed with a file removed at
/// once). Never creates the file itself.
pub fn access_log_writable(path: &Path) -> Result<(), ConfigError> {
    let fail = |what: String| Err(ConfigError::new("log.access_log_path", what));
    if path.is_dir() {
        return fail(format!("{} is a directory, not a file", path.display()));
    }
    if path.exists() {
        // A FIFO or a device (`/dev/stdout`) is opened as it is at start:
        // probing a FIFO would wait for its reader.
        if !path.is_file() {
            return Ok(());
        }
        return match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(_) => Ok(()),
            Err(e) => fail(format!(
                "{} cannot be opened for appending: {e}",
                path.display()
            )),
        };
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return fail(format!(
            "cannot create {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    probe_writable(&dir).or_else(|e| {
        fail(format!(
            "cannot create {}: directory {} is not writable: {e}",
            path.display(),
            dir.display()
        ))
    })
}

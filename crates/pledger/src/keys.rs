//! Signing keys at the edge: the local keyring, key files (passphrase-protected ones too),
//! ssh-agent, and which key a command signs with.
//!
//! Order: `--key PATH` / `PLEDGER_KEY`; then the keyring under the config dir
//! (`$PLEDGER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/pledger`, else `~/.config/pledger`): the
//! entry named by `--as`, else the keyring's default identity; then `~/.ssh/id_ed25519`. The
//! identity recorded is whoever owns the key on the roster; `--as` only selects among local
//! keys, and a key owned by someone else than `--as` names is refused.

use std::path::{Path, PathBuf};

use pledger_core::verify::EventSigner;
use pledger_core::Actor;
use ssh_key::{LineEnding, PrivateKey, PublicKey};

use crate::failure::Failure;

/// The environment variable naming the config dir (keyring included).
pub const CONFIG_DIR_ENV: &str = "PLEDGER_CONFIG_DIR";

/// The config dir: `$PLEDGER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/pledger`, else
/// `~/.config/pledger`.
pub fn default_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV) {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("pledger");
    }
    home().join(".config").join("pledger")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Private keys by identity name, one OpenSSH file each (mode 0600) with its `.pub`.
#[derive(Clone, Debug)]
pub struct Keyring {
    dir: PathBuf,
}

impl Keyring {
    pub fn in_config_dir(config_dir: &Path) -> Keyring {
        Keyring {
            dir: config_dir.join("keys"),
        }
    }

    pub fn at(dir: &Path) -> Keyring {
        Keyring {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.path(name).is_file()
    }

    /// Generates an ed25519 key for `name`, stores it and returns it. Refuses to overwrite.
    pub fn generate(&self, name: &str) -> Result<PrivateKey, Failure> {
        let path = self.path(name);
        if path.exists() {
            return Err(Failure::usage(format!(
                "{} already exists; a key is never overwritten",
                path.display()
            )));
        }
        let mut key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| Failure::other(format!("generating a key: {e}")))?;
        key.set_comment(format!("pledger:{name}"));
        self.store(name, &key)?;
        Ok(key)
    }

    /// Stores a private key (and its `.pub`) under `name`.
    pub fn store(&self, name: &str, key: &PrivateKey) -> Result<(), Failure> {
        let io =
            |p: &Path, e: &dyn std::fmt::Display| Failure::other(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, &e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = self.path(name);
        key.write_openssh_file(&path, LineEnding::LF)
            .map_err(|e| io(&path, &e))?;
        let public = path.with_extension("pub");
        let line = key.public_key().to_openssh().map_err(|e| io(&public, &e))?;
        std::fs::write(&public, format!("{line}\n")).map_err(|e| io(&public, &e))?;
        Ok(())
    }

    /// The identity this keyring acts as when `--as` is not given.
    pub fn default_name(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("default"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub fn set_default(&self, name: &str) -> Result<(), Failure> {
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(self.dir.join("default"), format!("{name}\n")))
            .map_err(|e| Failure::other(format!("{}: {e}", self.dir.display())))
    }
}

/// Reads an OpenSSH public key file (or a private key file's public half).
pub fn read_public_key(path: &Path) -> Result<pledger_core::identity::PublicKey, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    let key = if text.contains("PRIVATE KEY") {
        PrivateKey::from_openssh(&text)
            .map(|k| k.public_key().clone())
            .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
    } else {
        PublicKey::from_openssh(text.trim()).map_err(|e| {
            Failure::usage(format!(
                "{}: not an OpenSSH public key: {e}",
                path.display()
            ))
        })?
    };
    pledger_core::identity::PublicKey::from_ssh(key)
        .map_err(|e| Failure::usage(format!("{}: {}", path.display(), e.message)))
}

/// A key that signs ledger events, and the identity the caller claims with `--as`.
pub struct CliSigner {
    pub key: PrivateKey,
    pub claimed: Option<Actor>,
}

impl EventSigner for CliSigner {
    fn public_key(&self) -> &ssh_key::PublicKey {
        self.key.public_key()
    }
    fn sign(&self, message: &[u8]) -> Result<ssh_key::SshSig, String> {
        EventSigner::sign(&self.key, message)
    }
    fn claimed_identity(&self) -> Option<&Actor> {
        self.claimed.as_ref()
    }
}

/// Loads a private key file; an encrypted one is decrypted with a passphrase asked on the
/// terminal (`PLEDGER_KEY_PASSPHRASE` for scripts). A `.pub` path means the private key beside it.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, Failure> {
    let path = if path.extension().is_some_and(|e| e == "pub") {
        path.with_extension("")
    } else {
        path.to_path_buf()
    };
    let key = PrivateKey::read_openssh_file(&path).map_err(|e| {
        Failure::usage(format!(
            "{}: cannot read an OpenSSH private key: {e}",
            path.display()
        ))
    })?;
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(Failure::usage(format!(
            "{}: a {} key; pledger signs with ed25519 keys",
            path.display(),
            key.algorithm()
        )));
    }
    if !key.is_encrypted() {
        return Ok(key);
    }
    use std::io::IsTerminal;
    let passphrase = match std::env::var("PLEDGER_KEY_PASSPHRASE") {
        Ok(p) => p,
        Err(_) if !std::io::stdin().is_terminal() => {
            return Err(Failure::usage(format!(
                "{} is passphrase-protected and there is no terminal to ask on; set PLEDGER_KEY_PASSPHRASE",
                path.display()
            )))
        }
        Err(_) => rpassword::prompt_password(format!(
            "passphrase for {}: ",
            path.display()
        ))
        .map_err(|e| {
            Failure::usage(format!(
                "{} is passphrase-protected and no terminal can ask for it ({e}); set PLEDGER_KEY_PASSPHRASE",
                path.display()
            ))
        })?,
    };
    key.decrypt(passphrase.as_bytes())
        .map_err(|_| Failure::usage(format!("{}: wrong passphrase", path.display())))
}

/// Which key this command signs with (see the module docs for the order).
pub fn select_signer(
    key: Option<&Path>,
    claimed: Option<&str>,
    keyring: &Keyring,
) -> Result<CliSigner, Failure> {
    let claimed_actor = claimed.map(Actor::parse).transpose()?;
    let path = if let Some(path) = key {
        path.to_path_buf()
    } else if let Some(name) = claimed
        .or(keyring.default_name().as_deref())
        .map(str::to_string)
    {
        if keyring.has(&name) {
            keyring.path(&name)
        } else {
            let ssh = home().join(".ssh").join("id_ed25519");
            if !ssh.is_file() {
                return Err(Failure::usage(format!(
                    "no key to sign as {name}: none in the keyring ({}) and no ~/.ssh/id_ed25519; pass --key or create one with `pledger identity add {name} --generate`",
                    keyring.dir().display()
                )));
            }
            ssh
        }
    } else {
        let ssh = home().join(".ssh").join("id_ed25519");
        if !ssh.is_file() {
            return Err(Failure::usage(format!(
                "who is signing? pass --key <PRIVATE_KEY>, --as <NAME> for a key in {}, or keep a key at ~/.ssh/id_ed25519",
                keyring.dir().display()
            )));
        }
        ssh
    };
    Ok(CliSigner {
        key: load_private_key(&path)?,
        claimed: claimed_actor,
    })
}

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

/// The cache dir when `--cache-dir` is not given: `cache` in the config dir when one was
/// given (`--config-dir` or its variable: a test's or the demo's private one), else
/// `$XDG_CACHE_HOME/pledger` or `~/.cache/pledger`.
pub fn default_cache_dir(config_dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = config_dir {
        return dir.join("cache");
    }
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV) {
        return PathBuf::from(dir).join("cache");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("pledger");
    }
    home().join(".cache").join("pledger")
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

    /// The key file of `name`. Names that are not plain file names (a `/`, a leading `.`)
    /// never reach the file system: they map to no file.
    pub fn path(&self, name: &str) -> PathBuf {
        if Keyring::is_plain(name) {
            self.dir.join(name)
        } else {
            self.dir.join(".invalid-name")
        }
    }

    fn is_plain(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    }

    pub fn has(&self, name: &str) -> bool {
        Keyring::is_plain(name) && self.path(name).is_file()
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
        if !Keyring::is_plain(name) {
            return Err(Failure::usage(format!(
                "`{name}` cannot name a key file in the keyring (letters, digits, `-`, `_`, `.`, `@`; not starting with `.`)"
            )));
        }
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

/// Where a signing key lives: in memory (read from a file), or in ssh-agent.
pub enum SigningKey {
    Local(Box<PrivateKey>),
    /// The agent at `socket` holds the private half of `public`.
    Agent {
        public: ssh_key::PublicKey,
        socket: PathBuf,
    },
}

impl SigningKey {
    pub fn public_key(&self) -> &ssh_key::PublicKey {
        match self {
            SigningKey::Local(k) => k.public_key(),
            SigningKey::Agent { public, .. } => public,
        }
    }
}

/// A key that signs ledger events, and the identity the caller claims with `--as`.
pub struct CliSigner {
    pub key: SigningKey,
    pub claimed: Option<Actor>,
}

impl EventSigner for CliSigner {
    fn public_key(&self) -> &ssh_key::PublicKey {
        self.key.public_key()
    }
    fn sign(&self, message: &[u8]) -> Result<ssh_key::SshSig, String> {
        match &self.key {
            SigningKey::Local(k) => EventSigner::sign(&**k, message),
            SigningKey::Agent { public, socket } => agent_sign(socket, public, message),
        }
    }
    fn claimed_identity(&self) -> Option<&Actor> {
        self.claimed.as_ref()
    }
    fn note_key(&self) -> Option<ed25519_dalek::SigningKey> {
        match &self.key {
            SigningKey::Local(k) => EventSigner::note_key(&**k),
            SigningKey::Agent { .. } => None,
        }
    }
}

/// An `SSHSIG` made by ssh-agent: the agent signs the SSHSIG signed-data blob.
fn agent_sign(
    socket: &Path,
    public: &ssh_key::PublicKey,
    message: &[u8],
) -> Result<ssh_key::SshSig, String> {
    let namespace = pledger_core::verify::SIGNATURE_NAMESPACE;
    let data = ssh_key::SshSig::signed_data(namespace, ssh_key::HashAlg::Sha512, message)
        .map_err(|e| e.to_string())?;
    let mut client = ssh_agent_client_rs::Client::connect(socket)
        .map_err(|e| format!("ssh-agent at {}: {e}", socket.display()))?;
    let signature = client
        .sign(public, &data)
        .map_err(|e| format!("ssh-agent refused to sign: {e}"))?;
    ssh_key::SshSig::new(
        public.key_data().clone(),
        namespace,
        ssh_key::HashAlg::Sha512,
        signature,
    )
    .map_err(|e| e.to_string())
}

/// The ssh-agent socket (`$SSH_AUTH_SOCK`), if the agent there holds `public`.
fn agent_holding(public: &ssh_key::PublicKey) -> Option<PathBuf> {
    let socket = PathBuf::from(std::env::var_os("SSH_AUTH_SOCK")?);
    let mut client = ssh_agent_client_rs::Client::connect(&socket).ok()?;
    let held = client.list_all_identities().ok()?;
    held.iter()
        .any(|i| <&ssh_key::public::KeyData>::from(i) == public.key_data())
        .then_some(socket)
}

/// Opens the key at `path` for signing: a plain private key; a passphrase-protected one
/// through ssh-agent when the agent holds it, else with its passphrase; a `.pub` (or a
/// private key file that is not there) through ssh-agent.
pub fn open_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    let private = if path.extension().is_some_and(|e| e == "pub") {
        path.with_extension("")
    } else {
        path.to_path_buf()
    };
    if !private.is_file() {
        let public_path = if path.extension().is_some_and(|e| e == "pub") {
            path.to_path_buf()
        } else {
            path.with_extension("pub")
        };
        let public = read_public_key(&public_path)?.ssh().clone();
        return match agent_holding(&public) {
            Some(socket) => Ok(SigningKey::Agent { public, socket }),
            None => Err(Failure::usage(format!(
                "{}: no private key there, and no ssh-agent ($SSH_AUTH_SOCK) holds {}",
                private.display(),
                pledger_core::verify::key_id(&public)
            ))),
        };
    }
    let key = PrivateKey::read_openssh_file(&private).map_err(|e| {
        Failure::usage(format!(
            "{}: cannot read an OpenSSH private key: {e}",
            private.display()
        ))
    })?;
    if key.is_encrypted() {
        if let Some(socket) = agent_holding(key.public_key()) {
            return Ok(SigningKey::Agent {
                public: key.public_key().clone(),
                socket,
            });
        }
    }
    Ok(SigningKey::Local(Box::new(load_private_key(&private)?)))
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
        key: open_signing_key(&path)?,
        claimed: claimed_actor,
    })
}

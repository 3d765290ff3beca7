//! The nats-server process: finding the binary, writing its config, starting it on loopback
//! and stopping it cleanly. `pledger up`, `pledger demo` and the test harness all use this.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address the CLI uses when neither `--nats` nor `PLEDGER_NATS_URL` is given, and where
/// `pledger up` listens.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4222";
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no nats-server >= 2.11 found: set PLEDGER_NATS_SERVER, put nats-server on PATH, or run ops/install-nats-server.sh"
    )]
    BinaryNotFound,
    #[error("could not start nats-server {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("nats-server exited during start-up ({status}); its log says: {log_tail}")]
    ExitedEarly { status: String, log_tail: String },
    #[error(
        "nats-server did not accept connections on {addr} within {secs}s; its log says: {log_tail}"
    )]
    NotReady {
        addr: SocketAddr,
        secs: u64,
        log_tail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Finds nats-server: `$PLEDGER_NATS_SERVER`, then `.tools/bin/nats-server` in the current
/// directory or any parent (where `ops/install-nats-server.sh` puts it), then `PATH`.
pub fn find_nats_server() -> Result<PathBuf, ServerError> {
    if let Some(p) = std::env::var_os("PLEDGER_NATS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            starts.push(dir.to_path_buf());
        }
    }
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join(".tools/bin/nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(ServerError::BinaryNotFound)
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The single-node server config: loopback, JetStream on file storage with an fsync per
/// write (`sync_interval: always`; see docs/ARCHITECTURE.md for the trade-off).
pub fn render_config(listen: SocketAddr, store_dir: &Path) -> String {
    format!(
        "# Written by pledger. Single-node JetStream for the ledger.\n\
         server_name: pledger_local\n\
         listen: {listen}\n\
         max_payload: 1MB\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n",
        store = store_dir.display().to_string()
    )
}

/// One node of a JetStream cluster: its server name, its route listener and every node's.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub name: String,
    pub cluster: String,
    pub route_listen: SocketAddr,
    pub routes: Vec<SocketAddr>,
}

/// The `cluster` block of a node (what `ops/nats-cluster/` holds for three nodes).
pub fn render_cluster_block(node: &ClusterNode) -> String {
    let routes: Vec<String> = node
        .routes
        .iter()
        .map(|r| format!("nats-route://{r}"))
        .collect();
    format!(
        "cluster {{\n  name: {}\n  listen: {}\n  routes: [{}]\n}}\n",
        node.cluster,
        node.route_listen,
        routes.join(", ")
    )
}

/// A throwaway JetStream cluster on loopback (free ports, temporary stores), for fault tests
/// and for trying replication: `url()` lists every node, as `--nats` takes it.
pub struct EphemeralCluster {
    nodes: Vec<Option<NatsServerProcess>>,
    listen: Vec<SocketAddr>,
    members: Vec<ClusterNode>,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl EphemeralCluster {
    pub fn start(size: usize) -> Result<EphemeralCluster, ServerError> {
        // A port picked by free_port can be taken by someone else before a node binds it
        // (CI saw "address already in use"): a cluster whose node exits during start-up is
        // started again, every node on new ports and a new store.
        let mut attempt = 0;
        loop {
            match EphemeralCluster::start_once(size) {
                Err(ServerError::ExitedEarly { .. }) if attempt < 3 => attempt += 1,
                started => return started,
            }
        }
    }

    fn start_once(size: usize) -> Result<EphemeralCluster, ServerError> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("pledger-cluster-")
            .tempdir()
            .map_err(|source| ServerError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let listen: Vec<SocketAddr> = (0..size)
            .map(|_| ([127, 0, 0, 1], free_port()).into())
            .collect();
        let routes: Vec<SocketAddr> = (0..size)
            .map(|_| ([127, 0, 0, 1], free_port()).into())
            .collect();
        let members: Vec<ClusterNode> = (0..size)
            .map(|i| ClusterNode {
                name: format!("pledger_n{}", i + 1),
                cluster: "pledger_test".to_string(),
                route_listen: routes[i],
                routes: routes.clone(),
            })
            .collect();
        let mut cluster = EphemeralCluster {
            nodes: (0..size).map(|_| None).collect(),
            listen,
            members,
            binary,
            dir,
        };
        for i in 0..size {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Every node's URL, comma-separated.
    pub fn url(&self) -> String {
        self.listen
            .iter()
            .map(|a| format!("nats://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("nats://{}", self.listen[i])
    }

    /// The server name of node `i` (what stream info names as leader).
    pub fn node_name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Starts node `i` again on its port and store.
    pub fn restart(&mut self, i: usize) -> Result<(), ServerError> {
        let dir = self.dir.path().join(&self.members[i].name);
        self.nodes[i] = Some(NatsServerProcess::start_node(
            &self.binary,
            &dir,
            self.listen[i],
            &self.members[i],
        )?);
        Ok(())
    }
}

/// `ops/nats-auth.conf`: one user per role (admin, worker, person, service, auditor), each
/// password read by nats-server from an environment variable (docs/RUNBOOK.md, "NATS
/// permissions").
pub const AUTH_CONFIG: &str = include_str!("../../../ops/nats-auth.conf");

/// The name [`AUTH_CONFIG`] gets next to the server config that includes it.
pub const AUTH_CONFIG_FILE: &str = "nats-auth.conf";

/// The users of [`AUTH_CONFIG`], each with the environment variable holding its password.
pub const AUTH_USERS: [(&str, &str); 5] = [
    ("admin", "PLEDGER_NATS_ADMIN_PASSWORD"),
    ("worker", "PLEDGER_NATS_WORKER_PASSWORD"),
    ("person", "PLEDGER_NATS_PERSON_PASSWORD"),
    ("service", "PLEDGER_NATS_SERVICE_PASSWORD"),
    ("auditor", "PLEDGER_NATS_AUDITOR_PASSWORD"),
];

/// Passwords for the users of [`AUTH_CONFIG`]. A server started with them includes the auth
/// configuration and gets the passwords in its environment.
#[derive(Clone)]
pub struct NatsAuth {
    passwords: Vec<(&'static str, String)>,
}

impl NatsAuth {
    /// A fresh random password for every user (letters and digits, starting with a letter, as
    /// nats-server needs of a value read from the environment).
    pub fn generate() -> NatsAuth {
        NatsAuth {
            passwords: AUTH_USERS
                .iter()
                .map(|(user, _)| {
                    let random = format!(
                        "{}{}",
                        uuid::Uuid::now_v7().simple(),
                        uuid::Uuid::now_v7().simple()
                    );
                    (*user, format!("p{random}"))
                })
                .collect(),
        }
    }

    /// The password of `user`, if it is one of [`AUTH_USERS`].
    pub fn password(&self, user: &str) -> Option<&str> {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
    }

    /// The environment the server needs: one password variable per user.
    fn env(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        AUTH_USERS
            .iter()
            .filter_map(|(user, var)| self.password(user).map(|p| (*var, p)))
    }
}

/// A running nats-server child. Dropping it stops the server (SIGTERM, then SIGKILL).
pub struct NatsServerProcess {
    child: Option<Child>,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl NatsServerProcess {
    /// Writes the config under `data_dir` and starts the server, returning once it accepts
    /// TCP connections.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
    ) -> Result<NatsServerProcess, ServerError> {
        NatsServerProcess::spawn(binary, data_dir, listen, None)
    }

    /// [`NatsServerProcess::start`] with the users and permissions of `ops/nats-auth.conf`:
    /// the same config, plus [`AUTH_CONFIG`] written next to it and included, and the
    /// passwords in the server's environment.
    pub fn start_with_auth(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        auth: &NatsAuth,
    ) -> Result<NatsServerProcess, ServerError> {
        NatsServerProcess::spawn(binary, data_dir, listen, Some(auth))
    }

    fn spawn(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        auth: Option<&NatsAuth>,
    ) -> Result<NatsServerProcess, ServerError> {
        NatsServerProcess::spawn_node(binary, data_dir, listen, auth, None)
    }

    /// Starts one node of a cluster: the single-node config with the node's own name and
    /// `cluster` block ([`render_cluster_block`]).
    pub fn start_node(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        node: &ClusterNode,
    ) -> Result<NatsServerProcess, ServerError> {
        NatsServerProcess::spawn_node(binary, data_dir, listen, None, Some(node))
    }

    fn spawn_node(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        auth: Option<&NatsAuth>,
        node: Option<&ClusterNode>,
    ) -> Result<NatsServerProcess, ServerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Io { path, source }
        };
        let store = data_dir.join("jetstream");
        fs::create_dir_all(&store).map_err(io(&store))?;
        let mut config = render_config(listen, &store);
        if let Some(node) = node {
            config = config.replace(
                "server_name: pledger_local",
                &format!("server_name: {}", node.name),
            );
            config.push_str(&render_cluster_block(node));
        }
        if auth.is_some() {
            let auth_path = data_dir.join(AUTH_CONFIG_FILE);
            fs::write(&auth_path, AUTH_CONFIG).map_err(io(&auth_path))?;
            config.push_str(&format!("include {AUTH_CONFIG_FILE:?}\n"));
        }
        let config_path = data_dir.join("nats-server.conf");
        fs::write(&config_path, config).map_err(io(&config_path))?;
        let log_path = data_dir.join("nats-server.log");
        let log = fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let mut command = Command::new(binary);
        if let Some(auth) = auth {
            command.envs(auth.env());
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let mut server = NatsServerProcess {
            child: Some(child),
            addr: listen,
            log_path,
        };
        server.wait_ready(Duration::from_secs(15))?;
        Ok(server)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), ServerError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ServerError::ExitedEarly {
                        status: status.to_string(),
                        log_tail: self.log_tail(),
                    });
                }
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.log_says_ready()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(ServerError::NotReady {
                    addr: self.addr,
                    secs: limit.as_secs(),
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_says_ready(&self) -> bool {
        fs::read_to_string(&self.log_path)
            .map(|s| s.contains("Server is ready"))
            .unwrap_or(false)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Has the server exited on its own? Returns its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGKILL: no shutdown, no flush (a crash, for fault tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server to shut down (SIGTERM: it flushes and closes its store), waits up to
    /// ten seconds, then kills it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway server for tests and the demo: a free loopback port and a temporary store,
/// both removed on drop.
pub struct EphemeralServer {
    // Field order matters: the process stops before its directory is removed.
    process: NatsServerProcess,
    dir: tempfile::TempDir,
    auth: Option<NatsAuth>,
    binary: PathBuf,
}

impl EphemeralServer {
    pub fn start() -> Result<EphemeralServer, ServerError> {
        EphemeralServer::launch(None)
    }

    /// A throwaway server with the users and permissions of `ops/nats-auth.conf` and these
    /// passwords; [`EphemeralServer::url_as`] gives each user's URL.
    pub fn start_with_auth(auth: NatsAuth) -> Result<EphemeralServer, ServerError> {
        EphemeralServer::launch(Some(auth))
    }

    fn launch(auth: Option<NatsAuth>) -> Result<EphemeralServer, ServerError> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("pledger-nats-")
            .tempdir()
            .map_err(|source| ServerError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        // A port picked by free_port can be taken by someone else before the server binds
        // it; a server that exits during start-up gets another port.
        let mut attempt = 0;
        loop {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            match NatsServerProcess::spawn(&binary, dir.path(), addr, auth.as_ref()) {
                Ok(process) => {
                    return Ok(EphemeralServer {
                        process,
                        dir,
                        auth,
                        binary,
                    })
                }
                Err(ServerError::ExitedEarly { .. }) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
    pub fn url(&self) -> String {
        self.process.url()
    }
    /// The URL of one of the users of a server started with auth:
    /// `nats://<user>:<password>@127.0.0.1:<port>`. Panics for a server started without auth
    /// or a user not in [`AUTH_USERS`].
    pub fn url_as(&self, user: &str) -> String {
        let password = self
            .auth
            .as_ref()
            .expect("a server started with start_with_auth")
            .password(user)
            .unwrap_or_else(|| panic!("no user {user} in ops/nats-auth.conf"));
        format!("nats://{user}:{password}@{}", self.process.addr)
    }
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
    /// Stops the server (the store stays until drop): for "server is down" tests.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGKILLs the server (a crash: no shutdown, no flush); the store stays until drop.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again, after [`EphemeralServer::kill`] or [`EphemeralServer::stop`],
    /// on the same port, store and users (as [`EphemeralCluster::restart`] does for a node),
    /// returning once it accepts connections. A server still running is stopped first. The
    /// previous run's log is kept as `nats-server.log.<n>`.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.process.stop();
        let log = &self.process.log_path;
        let kept = (1..)
            .map(|n| log.with_extension(format!("log.{n}")))
            .find(|p| !p.exists())
            .expect("a free log name");
        let _ = fs::rename(log, kept);
        self.process = NatsServerProcess::spawn(
            &self.binary,
            self.dir.path(),
            self.process.addr,
            self.auth.as_ref(),
        )?;
        Ok(())
    }

    /// The server's log (the current run's), for a failing test to show.
    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }
}

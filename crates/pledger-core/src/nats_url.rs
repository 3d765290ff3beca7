//! A NATS URL with a user and password in it (`nats://worker:PASSWORD@host:4222`, how
//! `--nats` / `PLEDGER_NATS_URL` carry a role's credentials; see docs/RUNBOOK.md, "NATS
//! permissions"). async-nats 0.51 parses such a URL but never sends its credentials
//! (nats-io/nats.rs#1623), so the edges that connect (`pledger-infra`, the SDK) take them out
//! with [`credentials`] and pass them as connect options. Pure string handling: no IO.

/// The servers of a `--nats` value: one URL, or several separated by commas
/// (`nats://a:4222,nats://b:4222`, the nodes of a cluster; clients reconnect to any of them).
pub fn servers(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// The user and password of a `--nats` value: those of its first server that has any.
pub fn credentials_of(urls: &str) -> Option<(String, String)> {
    servers(urls).iter().find_map(|u| credentials(u))
}

/// A `--nats` value with every password replaced by `***`.
pub fn redact_all(urls: &str) -> String {
    servers(urls)
        .iter()
        .map(|u| redact(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password in `url`, percent-decoded; `None` when it has no user.
pub fn credentials(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _host) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    if user.is_empty() {
        return None;
    }
    Some((percent_decode(user), percent_decode(password)))
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

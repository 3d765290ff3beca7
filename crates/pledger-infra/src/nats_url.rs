//! NATS URLs with credentials, at the connecting edge: the parsing is
//! [`pledger_core::nats_url`]; here it becomes async-nats connect options.

pub use pledger_core::nats_url::{credentials, redact, redact_all, servers};

/// Connect options carrying the user and password of `urls` (one URL or a comma-separated
/// list), if it has any: async-nats ignores the credentials left in a URL.
pub fn connect_options(urls: &str) -> async_nats::ConnectOptions {
    match pledger_core::nats_url::credentials_of(urls) {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    }
}

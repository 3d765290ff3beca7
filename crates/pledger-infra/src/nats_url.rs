//! NATS URLs with credentials, at the connecting edge: the parsing is
//! [`pledger_core::nats_url`]; here it becomes async-nats connect options.

pub use pledger_core::nats_url::{credentials, redact};

/// Connect options carrying the user and password of `url`, if it has any. Connect with them
/// to `url` itself: async-nats ignores the credentials left in it.
pub fn connect_options(url: &str) -> async_nats::ConnectOptions {
    match credentials(url) {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    }
}

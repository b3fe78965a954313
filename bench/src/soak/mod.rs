//! Scenario `soak`: the local gateway (in this process) under hours-like churn for a set
//! time. Thousands of clients connect, subscribe, stay a random while and leave — by a clean
//! close, by dropping TCP without a close frame, or closed by the server's `POST
//! /disconnect` — and come back, while broadcasts run the whole time. It checks that no
//! message a client was owed went missing or came twice (`ledger`), that every broadcast's
//! report adds up, that once everyone has left the store holds no row, and that the
//! gateway's resident memory stayed flat (`trend`).
//!
//! The clients and the broadcaster run in a child process (`wsbridge-bench soak-clients`):
//! this process is then the gateway alone, so its RSS is the gateway's, and the accounting's
//! own growing record of broadcasts is not in it.

mod broadcaster;
mod clients;
mod heap;
mod ledger;
mod rows;
mod run;
mod socket;
mod summary;
mod trend;

use std::time::Duration;

pub use clients::{Endpoints, run as clients};
pub use run::{SoakOptions, StorageKind, plot, run};

/// How the clients churn and what is broadcast: shared by the scenario and its child.
#[derive(clap::Args, Debug, Clone)]
pub struct Churn {
    /// How long the clients churn.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    #[arg(long, default_value_t = 2_000)]
    pub clients: usize,
    /// Clients sharing one user (at most the per-user connection limit, 10, less room for
    /// connections whose `$disconnect` has not run yet).
    #[arg(long, default_value_t = 4)]
    pub clients_per_user: usize,
    /// Topics in the pool clients subscribe to.
    #[arg(long, default_value_t = 50)]
    pub topics: usize,
    /// Pool topics each session subscribes to.
    #[arg(long, default_value_t = 3)]
    pub topics_per_client: usize,
    /// Share of sessions that also subscribe to their own `user:{sub}`.
    #[arg(long, default_value_t = 0.25)]
    pub user_topic_share: f64,
    /// A session stays between these many seconds (uniformly drawn).
    #[arg(long, default_value_t = 5.0)]
    pub stay_min_seconds: f64,
    #[arg(long, default_value_t = 60.0)]
    pub stay_max_seconds: f64,
    /// Share of sessions that leave by dropping TCP without a close frame.
    #[arg(long, default_value_t = 0.3)]
    pub abort_share: f64,
    /// Share of sessions closed by the server (`POST /disconnect`).
    #[arg(long, default_value_t = 0.1)]
    pub server_close_share: f64,
    /// Topic broadcasts per second, each to one pool topic.
    #[arg(long, default_value_t = 20.0)]
    pub topic_rate: f64,
    /// User broadcasts per second, alternately by `user_id` and to `user:{sub}`.
    #[arg(long, default_value_t = 2.0)]
    pub user_rate: f64,
}

impl Churn {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes.max(0.0) * 60.0)
    }

    pub fn users(&self) -> usize {
        self.clients.div_ceil(self.clients_per_user.max(1))
    }

    /// The same options as command-line arguments, for the child.
    fn to_args(&self) -> Vec<String> {
        let options: [(&str, String); 12] = [
            ("--minutes", self.minutes.to_string()),
            ("--clients", self.clients.to_string()),
            ("--clients-per-user", self.clients_per_user.to_string()),
            ("--topics", self.topics.to_string()),
            ("--topics-per-client", self.topics_per_client.to_string()),
            ("--user-topic-share", self.user_topic_share.to_string()),
            ("--stay-min-seconds", self.stay_min_seconds.to_string()),
            ("--stay-max-seconds", self.stay_max_seconds.to_string()),
            ("--abort-share", self.abort_share.to_string()),
            ("--server-close-share", self.server_close_share.to_string()),
            ("--topic-rate", self.topic_rate.to_string()),
            ("--user-rate", self.user_rate.to_string()),
        ];
        options
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value])
            .collect()
    }

    pub fn check(&self) -> crate::report::Result<()> {
        if self.clients == 0 || self.topics == 0 || self.topics_per_client > self.topics {
            return Err("need clients, topics, and at most --topics topics per client".into());
        }
        if self.clients_per_user == 0 || self.clients_per_user > 8 {
            return Err(
                "--clients-per-user must be 1..=8: the per-user limit is 10, and a \
                        client may reconnect before its last connection's $disconnect ran"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&(self.abort_share + self.server_close_share))
            || self.stay_min_seconds > self.stay_max_seconds
        {
            return Err("the leave shares must add up to at most 1, stay min ≤ stay max".into());
        }
        Ok(())
    }
}

/// User `k`'s `sub`.
pub fn user(k: usize) -> String {
    format!("soak-u{k}")
}

/// Pool topic `k`.
pub fn pool_topic(k: usize) -> String {
    format!("soak:t{k}")
}

/// The user's own topic, owner-only under the built-in channel policy.
pub fn user_topic(user: &str) -> String {
    format!("user:{user}")
}

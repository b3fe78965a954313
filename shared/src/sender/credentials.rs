//! The key posts are signed with: credentials from the SDK's provider chain, fetched once and
//! kept until a few minutes before they expire (15 minutes when they do not say), and their
//! signing key, derived once a day. A post takes both under a read lock; only a refresh
//! waits, and only one runs at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::Mutex;
use tracing::warn;

use super::SendError;
use super::sigv4::{AmzDate, SigningKey};

/// Credentials are fetched again this long before they expire, so that a post is never
/// signed with credentials that lapse while it is in flight.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// After a failed fetch the provider is left alone this long: a broadcast's thousands of
/// posts get the same answer instead of each asking a provider that just failed.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Credentials that do not say when they expire are fetched again after this long, as the
/// SDK's own identity cache does: a provider may rotate them without saying so.
const UNDATED_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Most a provider (IMDS, the container endpoint, STS) may take before the posts waiting on
/// it fail as transient.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Credentials, until when to use them, and their signing key of one day.
#[derive(Debug)]
pub(super) struct Keyed {
    credentials: Credentials,
    refresh_at: SystemTime,
    pub(super) key: SigningKey,
}

impl Keyed {
    fn serves(&self, date: &AmzDate) -> bool {
        self.key.day() == date.day() && self.credentials_serve(date)
    }

    fn credentials_serve(&self, date: &AmzDate) -> bool {
        date.time() < self.refresh_at
    }

    fn unexpired(&self, date: &AmzDate) -> bool {
        self.credentials
            .expiry()
            .is_none_or(|expiry| date.time() < expiry)
    }
}

/// The signing keys of one credentials provider in one region.
pub(super) struct SigningKeys {
    provider: SharedCredentialsProvider,
    region: String,
    current: RwLock<Option<Arc<Keyed>>>,
    /// Held while refreshing, so that one refresh runs at a time; holds the last failed
    /// fetch and when it happened.
    refresh: Mutex<Option<(SystemTime, SendError)>>,
    derivations: AtomicU64,
}

impl SigningKeys {
    pub(super) fn new(provider: SharedCredentialsProvider, region: String) -> Self {
        Self {
            provider,
            region,
            current: RwLock::new(None),
            refresh: Mutex::new(None),
            derivations: AtomicU64::new(0),
        }
    }

    /// The key that signs a request made at `date`.
    pub(super) async fn at(&self, date: &AmzDate) -> Result<Arc<Keyed>, SendError> {
        match self.cached() {
            Some(keyed) if keyed.serves(date) => Ok(keyed),
            _ => self.refresh(date).await,
        }
    }

    /// How many keys were derived: once per day and per set of credentials.
    #[cfg(test)]
    pub(super) fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Arc<Keyed>> {
        // A poisoned lock only means a thread panicked while replacing one `Arc` by another.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn refresh(&self, date: &AmzDate) -> Result<Arc<Keyed>, SendError> {
        let mut last_failure = self.refresh.lock().await;
        // Another post may have refreshed while this one waited.
        let cached = self.cached();
        if let Some(keyed) = &cached
            && keyed.serves(date)
        {
            return Ok(keyed.clone());
        }
        let (credentials, refresh_at) = match &cached {
            // Only the day changed.
            Some(keyed) if keyed.credentials_serve(date) => {
                (keyed.credentials.clone(), keyed.refresh_at)
            }
            _ => match self.fetch(date.time(), &mut last_failure).await {
                Ok(fresh) => fresh,
                // Credentials that have not expired yet still sign, until the provider is
                // asked again.
                Err(error) => match cached.filter(|keyed| keyed.unexpired(date)) {
                    Some(keyed) => {
                        warn!(%error, "signing with the previous credentials until they expire");
                        let hold = date.time() + FAILURE_HOLD;
                        let retry_at = keyed.credentials.expiry().map_or(hold, |e| e.min(hold));
                        (keyed.credentials.clone(), retry_at)
                    }
                    None => return Err(error),
                },
            },
        };
        let key = SigningKey::derive(&credentials, date, &self.region)
            .map_err(|reason| SendError::Failed(format!("credentials: {reason}")))?;
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let keyed = Arc::new(Keyed {
            credentials,
            refresh_at,
            key,
        });
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // A post that read the clock just before midnight may refresh after one that read it
        // just after: the later day's key stays.
        if current
            .as_ref()
            .is_none_or(|stored| stored.key.day() <= keyed.key.day())
        {
            *current = Some(keyed.clone());
        }
        Ok(keyed)
    }

    /// Asks the provider, unless it failed less than `FAILURE_HOLD` ago.
    async fn fetch(
        &self,
        now: SystemTime,
        last_failure: &mut Option<(SystemTime, SendError)>,
    ) -> Result<(Credentials, SystemTime), SendError> {
        if let Some((at, error)) = last_failure.as_ref()
            && now
                .duration_since(*at)
                .is_ok_and(|held| held < FAILURE_HOLD)
        {
            return Err(error.clone());
        }
        let fetched = tokio::time::timeout(PROVIDER_TIMEOUT, self.provider.provide_credentials());
        let result = match fetched.await {
            Err(_) => Err(SendError::Transient(format!(
                "credentials: the provider did not answer within {PROVIDER_TIMEOUT:?}"
            ))),
            Ok(Err(error)) => Err(classify(&error)),
            Ok(Ok(credentials)) => match credentials.expiry() {
                Some(expiry) if expiry <= now => Err(SendError::Transient(
                    "credentials: the provider returned expired credentials".into(),
                )),
                Some(expiry) => Ok((credentials, refresh_time(now, expiry))),
                None => Ok((credentials, now + UNDATED_LIFETIME)),
            },
        };
        *last_failure = result.as_ref().err().map(|error| (now, error.clone()));
        result
    }
}

/// `REFRESH_BEFORE` the expiry; credentials that live less than twice that are used for half
/// their life instead, or short-lived ones would be fetched again for every post.
fn refresh_time(now: SystemTime, expiry: SystemTime) -> SystemTime {
    let early = expiry.checked_sub(REFRESH_BEFORE).unwrap_or(now);
    let halfway = now + expiry.duration_since(now).unwrap_or_default() / 2;
    early.max(halfway)
}

/// No credentials anywhere in the chain, or a chain configured wrong, stays so: `Failed`.
/// A provider that timed out or failed on its way (IMDS, STS) may answer next time.
fn classify(error: &CredentialsError) -> SendError {
    let reason = format!("credentials: {}", DisplayErrorContext(error));
    match error {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            SendError::Failed(reason)
        }
        _ => SendError::Transient(reason),
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;

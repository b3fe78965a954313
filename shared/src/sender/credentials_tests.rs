use std::sync::atomic::AtomicU32;
use std::time::UNIX_EPOCH;

use aws_credential_types::credential_fn::provide_credentials_fn;
use aws_credential_types::provider::Result as CredentialsResult;

use super::*;

/// 2024-05-01T10:00:00Z: mid-morning, far from midnight.
fn morning() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_557_600)
}

fn at(time: SystemTime) -> AmzDate {
    AmzDate::at(time)
}

/// A provider that answers `answer(n)` on its n-th call (from 1), and counts its calls.
fn provider(
    answer: impl Fn(u32) -> CredentialsResult + Send + Sync + 'static,
) -> (SharedCredentialsProvider, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let answer = Arc::new(answer);
    let provider = provide_credentials_fn(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = answer.clone();
        async move { answer(n) }
    });
    (SharedCredentialsProvider::new(provider), calls)
}

fn credentials(expiry: Option<SystemTime>) -> Credentials {
    let mut credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
    *credentials.expiry_mut() = expiry;
    credentials
}

fn calls(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

#[tokio::test]
async fn the_key_is_derived_once_a_day_from_credentials_fetched_once() {
    // GIVEN credentials good for two days
    let (provider, asked) = provider(|_| {
        Ok(credentials(Some(
            morning() + Duration::from_secs(2 * 86_400),
        )))
    });
    let keys = Arc::new(SigningKeys::new(provider, "eu-west-1".into()));

    // WHEN 200 posts race for the key, then more are signed through the day
    let racers: Vec<_> = (0..200)
        .map(|n| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.at(&at(morning() + Duration::from_millis(n))).await })
        })
        .collect();
    let mut first = Vec::new();
    for racer in racers {
        first.push(racer.await.unwrap().unwrap());
    }
    let evening = keys
        .at(&at(morning() + Duration::from_secs(13 * 3_600)))
        .await
        .unwrap();

    // THEN the provider was asked once, one key derived, and every post got that key
    assert_eq!(calls(&asked), 1);
    assert_eq!(keys.derivations(), 1);
    assert!(first.iter().all(|keyed| Arc::ptr_eq(keyed, &evening)));

    // AND after midnight the key is derived again, from the same credentials
    let tomorrow = keys
        .at(&at(morning() + Duration::from_secs(14 * 3_600)))
        .await
        .unwrap();
    assert_eq!(keys.derivations(), 2);
    assert_eq!(calls(&asked), 1);
    assert_eq!(tomorrow.key.day(), evening.key.day() + 1);
    // AND a post whose clock still reads yesterday gets yesterday's key without replacing
    // today's
    let late = keys
        .at(&at(morning() + Duration::from_secs(13 * 3_600)))
        .await
        .unwrap();
    assert_eq!(late.key.day(), evening.key.day());
    let again = keys
        .at(&at(morning() + Duration::from_secs(15 * 3_600)))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&again, &tomorrow));
}

#[tokio::test]
async fn credentials_are_fetched_again_a_few_minutes_before_they_expire() {
    // GIVEN a provider whose n-th credentials expire n × 30 min after the morning
    let (provider, asked) = provider(|n| {
        Ok(credentials(Some(
            morning() + Duration::from_secs(u64::from(n) * 1_800),
        )))
    });
    let keys = SigningKeys::new(provider, "eu-west-1".into());

    // WHEN posts are signed 0, 20, 26 and 27 minutes after the morning
    keys.at(&at(morning())).await.unwrap();
    keys.at(&at(morning() + Duration::from_secs(20 * 60)))
        .await
        .unwrap();
    assert_eq!(calls(&asked), 1);
    keys.at(&at(morning() + Duration::from_secs(26 * 60)))
        .await
        .unwrap();
    keys.at(&at(morning() + Duration::from_secs(27 * 60)))
        .await
        .unwrap();

    // THEN the provider was asked again once, inside the last 5 minutes
    assert_eq!(calls(&asked), 2);
    assert_eq!(keys.derivations(), 2);
}

#[tokio::test]
async fn credentials_without_an_expiry_are_fetched_again_every_15_minutes() {
    // GIVEN credentials that do not say when they expire (Lambda's, from its environment)
    let (provider, asked) = provider(|_| Ok(credentials(None)));
    let keys = SigningKeys::new(provider, "eu-west-1".into());
    // WHEN posts are signed at 0 and 14 minutes, then at 16
    keys.at(&at(morning())).await.unwrap();
    keys.at(&at(morning() + Duration::from_secs(14 * 60)))
        .await
        .unwrap();
    assert_eq!(calls(&asked), 1);
    keys.at(&at(morning() + Duration::from_secs(16 * 60)))
        .await
        .unwrap();
    // THEN the provider was asked again once, as the SDK's identity cache would
    assert_eq!(calls(&asked), 2);
}

#[tokio::test]
async fn short_lived_credentials_are_used_for_half_their_life() {
    // GIVEN credentials that live 4 minutes, less than the refresh margin
    let (provider, asked) =
        provider(|_| Ok(credentials(Some(morning() + Duration::from_secs(240)))));
    let keys = SigningKeys::new(provider, "eu-west-1".into());
    // WHEN posts are signed at 0 s and 60 s, then at 130 s
    keys.at(&at(morning())).await.unwrap();
    keys.at(&at(morning() + Duration::from_secs(60)))
        .await
        .unwrap();
    // THEN they are fetched once for the first two minutes, not once per post
    assert_eq!(calls(&asked), 1);
    keys.at(&at(morning() + Duration::from_secs(130)))
        .await
        .unwrap();
    assert_eq!(calls(&asked), 2);
}

#[tokio::test]
async fn a_failing_provider_fails_posts_with_its_reason_and_is_not_stormed() {
    // GIVEN a chain without credentials, and one whose provider errs on its way
    let (missing, missing_asked) = provider(|_| {
        Err(CredentialsError::not_loaded(
            "no credentials in the environment",
        ))
    });
    let (erring, erring_asked) = provider(|_| Err(CredentialsError::provider_error("IMDS: 503")));
    let missing = SigningKeys::new(missing, "eu-west-1".into());
    let erring = SigningKeys::new(erring, "eu-west-1".into());

    // WHEN posts are signed
    let error = missing.at(&at(morning())).await.unwrap_err();
    let transient = erring.at(&at(morning())).await.unwrap_err();

    // THEN no credentials is final, a provider error worth another try; both say why
    assert!(
        matches!(&error, SendError::Failed(reason) if reason.contains("no credentials in the environment")),
        "{error:?}"
    );
    assert!(
        matches!(&transient, SendError::Transient(reason) if reason.contains("IMDS: 503")),
        "{transient:?}"
    );
    // AND posts within the next second get the same answer without asking again
    for millis in [1, 500, 999] {
        let later = at(morning() + Duration::from_millis(millis));
        assert_eq!(erring.at(&later).await.unwrap_err(), transient);
    }
    assert_eq!(calls(&erring_asked), 1);
    // AND the provider is asked again after that
    missing
        .at(&at(morning() + Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert_eq!(calls(&missing_asked), 2);
}

#[tokio::test]
async fn credentials_that_have_not_expired_sign_while_their_refresh_fails() {
    // GIVEN a provider that answers once, with credentials good for 30 minutes, then fails
    let (provider, asked) = provider(|n| match n {
        1 => Ok(credentials(Some(morning() + Duration::from_secs(1_800)))),
        _ => Err(CredentialsError::provider_error("STS: throttled")),
    });
    let keys = SigningKeys::new(provider, "eu-west-1".into());
    let first = keys.at(&at(morning())).await.unwrap();

    // WHEN posts are signed after the refresh time (25 min) but before the expiry
    let during = keys
        .at(&at(morning() + Duration::from_secs(26 * 60)))
        .await
        .unwrap();
    // THEN they are signed with the same credentials, and the provider was asked
    assert_eq!(calls(&asked), 2);
    assert_eq!(during.credentials.expiry(), first.credentials.expiry());
    // AND once the credentials have expired, posts fail with the provider's reason
    let error = keys
        .at(&at(morning() + Duration::from_secs(31 * 60)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SendError::Transient(reason) if reason.contains("STS: throttled")),
        "{error:?}"
    );
}

#[tokio::test]
async fn expired_credentials_from_the_provider_are_refused() {
    let (provider, _) = provider(|_| Ok(credentials(Some(morning() - Duration::from_secs(1)))));
    let keys = SigningKeys::new(provider, "eu-west-1".into());
    let error = keys.at(&at(morning())).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Transient(reason) if reason.contains("expired")),
        "{error:?}"
    );
}

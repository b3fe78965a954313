//! Who may reach what. The gateway's conveniences (tokens signed with the public dev secret,
//! a broadcast API without a key, `@connections` without IAM) are safe on loopback only: it
//! refuses to listen anywhere else unless both APIs are protected, and `@connections`
//! answers clients on this machine only, wherever it listens.

use std::net::{IpAddr, SocketAddr};

use wsbridge::config::JwtKey;
use wsbridge::dev::DEV_SECRET;

use crate::{GatewayConfig, GatewayError};

/// Refuses a configuration that would listen off loopback with the public dev secret or
/// with an open broadcast API: anyone who could reach it could connect with a token they
/// mint themselves, or broadcast to every client.
pub fn check_exposure(config: &GatewayConfig) -> Result<(), GatewayError> {
    let Some(address) = [config.ws_address, config.http_address]
        .into_iter()
        .find(|address| !address.ip().to_canonical().is_loopback())
    else {
        return Ok(());
    };
    let mut missing = Vec::new();
    if matches!(&config.auth.key, JwtKey::Secret(secret) if secret == DEV_SECRET) {
        missing.push("JWT_SECRET (a secret of your own: the default one is public)");
    }
    if config.broadcast.api_key.is_none() && config.sigv4.is_none() {
        missing.push("BROADCAST_API_KEY (or --sigv4)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(GatewayError::Exposed {
        address,
        missing: missing.join(" and "),
    })
}

/// A peer on this machine: loopback, or the very address the connection was accepted on
/// (a client on this host that dialled the machine's own non-loopback address). A remote
/// client cannot pose as either over TCP: the handshake's answer to such a source address
/// never leaves this machine.
pub(crate) fn is_this_machine(peer: IpAddr, accepted_on: SocketAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || peer == accepted_on.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsbridge::config::AuthConfig;

    const SECRET: &str = "a-secret-of-our-own-32-bytes-long!!";

    fn on(address: &str) -> GatewayConfig {
        let address: SocketAddr = address.parse().unwrap();
        GatewayConfig {
            ws_address: address,
            http_address: address,
            ..GatewayConfig::loopback()
        }
    }

    fn protected(mut config: GatewayConfig) -> GatewayConfig {
        config.auth.key = JwtKey::Secret(SECRET.into());
        config.broadcast.api_key = Some("backend-key".into());
        config
    }

    fn refusal(config: &GatewayConfig) -> String {
        check_exposure(config)
            .expect_err("refused off loopback")
            .to_string()
    }

    #[test]
    fn loopback_needs_nothing() {
        for address in [
            "127.0.0.1:0",
            "[::1]:0",
            "127.0.0.2:3001",
            "[::ffff:127.0.0.1]:0",
        ] {
            assert!(check_exposure(&on(address)).is_ok(), "{address}");
        }
    }

    #[test]
    fn off_loopback_the_dev_secret_and_an_open_broadcast_api_are_refused_by_name() {
        // GIVEN the defaults on every interface
        let open = on("0.0.0.0:3001");
        let message = refusal(&open);
        assert!(message.contains("0.0.0.0:3001"), "{message}");
        assert!(message.contains("JWT_SECRET"), "{message}");
        assert!(message.contains("BROADCAST_API_KEY"), "{message}");

        // WHEN only the secret is set, THEN the key is still missing
        let mut secret_only = protected(on("0.0.0.0:3001"));
        secret_only.broadcast.api_key = None;
        let message = refusal(&secret_only);
        assert!(!message.contains("JWT_SECRET"), "{message}");
        assert!(message.contains("BROADCAST_API_KEY"), "{message}");

        // AND only the key is not enough either, on one exposed listener out of two
        let mut key_only = protected(GatewayConfig {
            http_address: "[::]:3000".parse().unwrap(),
            ..GatewayConfig::loopback()
        });
        key_only.auth = wsbridge::dev::auth_config();
        let message = refusal(&key_only);
        assert!(message.contains("[::]:3000"), "{message}");
        assert!(message.contains("JWT_SECRET"), "{message}");
        assert!(!message.contains("BROADCAST_API_KEY"), "{message}");
    }

    #[test]
    fn off_loopback_a_real_secret_or_public_key_and_an_api_key_or_sigv4_are_enough() {
        assert!(check_exposure(&protected(on("192.0.2.10:3001"))).is_ok());
        let mut public_key = protected(on("0.0.0.0:3001"));
        public_key.auth = AuthConfig::from_lookup(|name| match name {
            "JWT_ALGORITHM" => Some("RS256".into()),
            "JWT_PUBLIC_KEY" => Some("-----BEGIN PUBLIC KEY-----".into()),
            "JWT_ISSUER" => Some("https://id.example.com".into()),
            "JWT_AUDIENCE" => Some("wsbridge".into()),
            _ => None,
        })
        .unwrap();
        assert!(check_exposure(&public_key).is_ok());
        // the broadcast API's IAM mode protects it as a key does
        let mut signed = protected(on("0.0.0.0:3001"));
        signed.broadcast.api_key = None;
        signed.sigv4 = Some(crate::SigV4Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            region: "us-east-1".into(),
        });
        assert!(check_exposure(&signed).is_ok());
    }

    #[test]
    fn this_machine_is_loopback_or_the_address_dialled() {
        let lan: SocketAddr = "192.0.2.10:3001".parse().unwrap();
        assert!(is_this_machine("127.0.0.1".parse().unwrap(), lan));
        assert!(is_this_machine("::1".parse().unwrap(), lan));
        assert!(is_this_machine("::ffff:127.0.0.1".parse().unwrap(), lan));
        assert!(is_this_machine("192.0.2.10".parse().unwrap(), lan));
        assert!(is_this_machine("::ffff:192.0.2.10".parse().unwrap(), lan));
        assert!(!is_this_machine("192.0.2.11".parse().unwrap(), lan));
        assert!(!is_this_machine("203.0.113.5".parse().unwrap(), lan));
    }
}

//! The `kms` feature against moto's KMS.
#![cfg(feature = "kms")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use xrole_crypto::kms::{KMS_TEXT_HEADER, KmsKeyring};
use xrole_crypto::{Aad, Error, Keyring};
use xrole_testkit::Moto;

fn client(moto: &Moto) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

async fn create_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description("xrole keyring wrapping key")
        .send()
        .await
        .unwrap();
    out.key_metadata.unwrap().key_id
}

fn aad() -> Aad {
    Aad::new("aws_links", "external_id", "org_1", "link_1")
}

#[tokio::test]
async fn kms_wrapped_keyring_generate_wrap_unwrap_and_rotate() {
    let moto = Moto::start().unwrap();
    let client = client(&moto);
    let kms_key = create_key(&client).await;
    let kms = KmsKeyring::new(client.clone(), kms_key.clone());

    // Generate with data keys: the text holds no plaintext key material.
    let (mut keyring, wrapped) = kms.generate().await.unwrap();
    assert!(wrapped.starts_with(KMS_TEXT_HEADER));
    assert!(wrapped.contains(&format!("kms_key={kms_key}")));
    let plain = keyring.to_text();
    for item in plain
        .expose_secret()
        .split(';')
        .filter_map(|i| i.split_once('='))
        .filter(|(_, v)| v.len() > 20)
    {
        assert!(
            !wrapped.contains(item.1),
            "raw key material in the wrapped text"
        );
    }
    // The plain parser does not accept wrapped text.
    assert!(matches!(
        Keyring::parse(&wrapped),
        Err(Error::KeyringFormat(_))
    ));

    let blob = keyring
        .seal(b"sealed under a KMS data key", &aad())
        .unwrap();
    let unwrapped = kms.unwrap(&wrapped).await.unwrap();
    assert_eq!(
        unwrapped.open(&blob, &aad()).unwrap().expose_secret(),
        b"sealed under a KMS data key"
    );
    let api_key = xrole_crypto::ApiKey::generate();
    assert_eq!(
        unwrapped.api_key_hasher().hash(&api_key),
        keyring.api_key_hasher().hash(&api_key)
    );

    // Rotate, re-wrap, unwrap: both keys present, new primary.
    let id = keyring.add_key().unwrap();
    keyring.promote(id).unwrap();
    let rewrapped = kms.wrap(&keyring).await.unwrap();
    let reloaded = kms.unwrap(&rewrapped).await.unwrap();
    assert_eq!(reloaded.primary_key_id(), id);
    assert_eq!(reloaded.key_ids(), vec![1, id]);
    assert_eq!(
        reloaded.open(&blob, &aad()).unwrap().expose_secret(),
        b"sealed under a KMS data key"
    );
    let new_blob = reloaded.seal(b"new", &aad()).unwrap();
    assert_eq!(
        keyring.open(&new_blob, &aad()).unwrap().expose_secret(),
        b"new"
    );

    // A plain generated keyring can be wrapped too.
    let local = Keyring::generate().unwrap();
    let local_blob = local.seal(b"local", &aad()).unwrap();
    let local_wrapped = kms.wrap(&local).await.unwrap();
    let local_back = kms.unwrap(&local_wrapped).await.unwrap();
    assert_eq!(
        local_back
            .open(&local_blob, &aad())
            .unwrap()
            .expose_secret(),
        b"local"
    );
}

#[tokio::test]
async fn kms_unwrap_fails_for_moved_slots_other_keys_and_garbage() {
    let moto = Moto::start().unwrap();
    let client = client(&moto);
    let kms = KmsKeyring::new(client.clone(), create_key(&client).await);
    let mut keyring = Keyring::generate().unwrap();
    keyring.add_key().unwrap();
    let wrapped = kms.wrap(&keyring).await.unwrap();
    let value = |name: &str| {
        wrapped
            .split(';')
            .find_map(|i| i.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };

    // Swapping the wrapped pepper and key 1 breaks the encryption context.
    let (pepper, key1) = (value("pepper"), value("key.1"));
    let swapped = wrapped
        .replace(&pepper, "PEPPER")
        .replace(&key1, &pepper)
        .replace("PEPPER", &key1);
    assert!(matches!(kms.unwrap(&swapped).await, Err(Error::Kms(_))));

    // Another KMS key cannot unwrap it.
    let other = KmsKeyring::new(client.clone(), create_key(&client).await);
    assert!(matches!(other.unwrap(&wrapped).await, Err(Error::Kms(_))));

    // Malformed text.
    assert!(matches!(
        kms.unwrap("xrole-keyring-v1;pepper=AAAA").await,
        Err(Error::KeyringFormat(_))
    ));
    let bad = wrapped.replace(&key1, "!!!");
    assert!(matches!(
        kms.unwrap(&bad).await,
        Err(Error::KeyringFormat(_))
    ));
    let extra = format!("{wrapped};surprise=1");
    assert!(matches!(
        kms.unwrap(&extra).await,
        Err(Error::KeyringFormat(_))
    ));
    assert!(matches!(
        kms.unwrap_env("XROLE_CRYPTO_TEST_UNSET_KMS").await,
        Err(Error::MissingEnv(_))
    ));

    // Debug shows the KMS key id, nothing secret.
    assert!(format!("{kms:?}").contains("KmsKeyring"));
}

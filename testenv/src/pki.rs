//! Certificates and keys for a loopback control plane: one CA, the API server's serving
//! certificate, an admin client certificate, the ServiceAccount token signing key, and client
//! certificates for further identities issued on demand.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// The cluster CA, kept in memory so tests can be given identities of their own after start.
pub(crate) type Ca = Issuer<'static, KeyPair>;

/// Writes the control plane's certificates and keys into `dir`; returns the CA.
pub(crate) fn write(dir: &Path) -> Result<Ca, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("onus-testenv-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::default();
    serving.distinguished_name = name("kube-apiserver", None);
    serving.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    let files = [
        ("ca.crt", ca_cert.pem()),
        ("apiserver.crt", serving_cert.pem()),
        ("apiserver.key", serving_key.serialize_pem()),
        ("sa.key", sa_key.serialize_pem()),
        ("sa.pub", sa_key.public_key_pem()),
    ];
    for (file, pem) in files {
        fs::write(dir.join(file), pem).map_err(|e| Error::io(dir.join(file), e))?;
    }
    // system:masters bypasses authorization: the harness and the tests act as cluster admin.
    client_cert(
        dir,
        &issuer,
        "admin",
        "onus-testenv-admin",
        Some("system:masters"),
    )?;
    Ok(issuer)
}

/// Issues a client certificate for `user` (the API server's user name is the certificate's
/// common name, its one group the organization) and writes `<stem>.crt` and `<stem>.key`
/// into `dir`; returns their paths.
pub(crate) fn client_cert(
    dir: &Path,
    ca: &Ca,
    stem: &str,
    user: &str,
    group: Option<&str>,
) -> Result<(PathBuf, PathBuf), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(user, group);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca)?;
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    fs::write(&cert_path, cert.pem()).map_err(|e| Error::io(&cert_path, e))?;
    fs::write(&key_path, key.serialize_pem()).map_err(|e| Error::io(&key_path, e))?;
    Ok((cert_path, key_path))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

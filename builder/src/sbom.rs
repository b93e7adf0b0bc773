//! The SPDX 2.3 software bill of materials of an image (JSON): the image itself, every Debian
//! package and every other input, with versions, package URLs and digests.

use images::manifest::Manifest;
use serde_json::{Value, json};

/// The SPDX JSON document for the image `manifest` describes.
pub fn document(manifest: &Manifest) -> String {
    let image_id = "SPDXRef-Image";
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": manifest.name,
        "versionInfo": manifest.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "checksums": [{"algorithm": "SHA256", "checksumValue": manifest.disk.sha256}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut contains = |id: String, package: Value| {
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        packages.push(package);
    };
    for (name, version) in &manifest.packages {
        let id = format!("SPDXRef-deb-{}", spdx_id(name));
        let mut package = json!({
            "SPDXID": id,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "supplier": "Organization: Debian",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{name}@{}?arch=amd64", purl_escape(version)),
            }],
        });
        if let Some(input) = manifest
            .inputs
            .iter()
            .find(|i| i.kind == "deb" && &i.origin == name)
        {
            package["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": input.sha256}]);
        }
        contains(id, package);
    }
    for input in manifest
        .inputs
        .iter()
        .filter(|i| i.kind != "deb" && i.kind != "debian")
    {
        let id = format!("SPDXRef-input-{}", spdx_id(&input.name));
        contains(
            id.clone(),
            json!({
                "SPDXID": id,
                "name": input.name,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": input.sha256}],
            }),
        );
    }
    let created = rfc3339(manifest.build.source_date_epoch);
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", manifest.name, manifest.version),
        "documentNamespace": format!(
            "https://slipway.invalid/spdx/{}-{}-{}", manifest.name, manifest.version, manifest.disk.sha256
        ),
        "creationInfo": {
            "created": created,
            "creators": creators(manifest),
        },
        "packages": packages,
        "relationships": relationships,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// Slipway, then every host tool package that shaped the image, as SPDX `Tool:` creators.
fn creators(manifest: &Manifest) -> Vec<String> {
    std::iter::once(format!("Tool: slipway-{}", manifest.build.slipway))
        .chain(
            manifest
                .build
                .tools
                .iter()
                .map(|(package, version)| format!("Tool: {package}-{version}")),
        )
        .collect()
}

/// SPDX identifiers allow letters, digits, `.` and `-`.
fn spdx_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Percent-encodes what a purl version may not hold (`:` of epochs, `+`).
fn purl_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' => "%3A".to_owned(),
            '+' => "%2B".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn identifiers_and_purls_are_escaped() {
        assert_eq!(spdx_id("libstdc++6"), "libstdc--6");
        assert_eq!(purl_escape("1:1.35.0-4+deb12u1"), "1%3A1.35.0-4%2Bdeb12u1");
    }
}

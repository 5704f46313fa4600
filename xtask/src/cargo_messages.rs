//! Reading cargo's `--message-format=json` output.

/// Whether a message's `package_id` names package `name`. Cargo writes the id in two forms: since
/// 1.77 `registry+https://…#name@version` (or `path+file:///…#name@version`), before that
/// `name version (source)`.
pub fn package_is(package_id: &str, name: &str) -> bool {
    package_id.contains(&format!("#{name}@")) || package_id.starts_with(&format!("{name} "))
}

#[cfg(test)]
mod tests {
    use super::package_is;

    #[test]
    fn both_id_forms_name_their_package_and_no_other() {
        let new = "registry+https://github.com/rust-lang/crates.io-index#dfdx@0.13.0";
        let old = "dfdx 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)";
        for id in [new, old] {
            assert!(package_is(id, "dfdx"));
            assert!(!package_is(id, "df"));
        }
        assert!(!package_is("path+file:///w/plugins/abi#vaelab-plugin-abi@0.1.0", "vaelab-plugin"));
    }
}

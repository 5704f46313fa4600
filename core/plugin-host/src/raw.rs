//! Host-side helpers for calling across the plugin C ABI: error buffers, configurations, C strings.

use std::ffi::{c_char, CStr, CString};
use vaelab_plugin_abi as abi;

/// Room for a plugin's error message.
pub(crate) const ERROR_BUFFER: usize = 1024;

/// The message a plugin wrote into an error buffer.
pub(crate) fn message(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

/// Key/value pairs laid out for the ABI; keeps the C strings alive while the view is used.
pub(crate) struct RawConfig {
    _strings: Vec<CString>,
    items: Vec<abi::VaelabKeyValue>,
}

impl RawConfig {
    pub(crate) fn new(pairs: &[(String, String)]) -> Result<RawConfig, String> {
        let mut strings = Vec::new();
        let mut items = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (CString::new(k.as_str()), CString::new(v.as_str()));
            let (k, v) = (k.map_err(|_| "config text contains NUL")?, v.map_err(|_| "config text contains NUL")?);
            items.push(abi::VaelabKeyValue { key: k.as_ptr(), value: v.as_ptr() });
            strings.extend([k, v]);
        }
        Ok(RawConfig { _strings: strings, items })
    }

    pub(crate) fn view(&self) -> abi::VaelabConfig {
        abi::VaelabConfig { len: self.items.len(), items: self.items.as_ptr() }
    }
}

/// A C string from a table, if present and UTF-8.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    CStr::from_ptr(p).to_str().ok().filter(|s| !s.is_empty()).map(str::to_string)
}

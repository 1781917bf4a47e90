//! What the gate reads from requests and how it writes AWS errors.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// The facts the gate needs about one request, read without consuming it.
#[derive(Debug, Default)]
pub(crate) struct RequestInfo {
    /// `Action` (query protocols) or the `X-Amz-Target` suffix (JSON protocols).
    pub action: Option<String>,
    /// The SigV4 signing name from the credential scope (`sts`, `ec2`, ...).
    pub service: Option<String>,
    /// The region from the credential scope.
    pub region: Option<String>,
    /// The access key id the request was signed with.
    pub access_key_id: Option<String>,
    /// `ClientToken` / `ClientRequestToken`, when present.
    pub client_token: Option<String>,
    /// Whether the JSON protocol is in use (`X-Amz-Target`).
    pub json: bool,
    /// The form parameters (query protocols), query string and body merged.
    pub params: HashMap<String, String>,
    /// The request body of a JSON protocol, parsed.
    pub json_body: Option<serde_json::Value>,
}

impl RequestInfo {
    pub(crate) fn read(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> RequestInfo {
        let mut info = RequestInfo::default();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(q) = query {
            info.params
                .extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if let Some(target) = header("x-amz-target") {
            info.json = true;
            info.action = target.rsplit('.').next().map(str::to_owned);
            if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_slice(body) {
                info.client_token = ["ClientToken", "ClientRequestToken"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|v| v.as_str()).map(str::to_owned));
                info.json_body = Some(v);
            }
        } else {
            let form = header("content-type")
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
            if form {
                info.params
                    .extend(url::form_urlencoded::parse(body).into_owned());
            }
            info.action = info.params.get("Action").cloned();
            info.client_token = ["ClientToken", "ClientRequestToken"]
                .iter()
                .find_map(|k| info.params.get(*k).cloned());
        }
        // "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sts/aws4_request, ..."
        let credential = header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .map(|c| c.split(',').next().unwrap_or("").trim().to_owned())
            .or_else(|| info.params.get("X-Amz-Credential").cloned());
        if let Some(c) = credential {
            let mut parts = c.split('/');
            info.access_key_id = parts.next().map(str::to_owned);
            info.region = parts.nth(1).map(str::to_owned);
            info.service = parts.next().map(str::to_owned);
        }
        info
    }
}

/// An AWS error, written in the shape of the protocol the request used.
#[derive(Debug, Clone)]
pub(crate) struct AwsError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// `Sender` or `Receiver` (query protocols).
    pub sender: bool,
}

impl AwsError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> AwsError {
        AwsError {
            status,
            code: code.to_owned(),
            message: message.into(),
            sender: status.is_client_error(),
        }
    }

    /// STS `AccessDenied` (HTTP 403).
    pub(crate) fn access_denied(message: impl Into<String>) -> AwsError {
        AwsError::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    /// STS `ValidationError` (HTTP 400).
    pub(crate) fn validation(message: impl Into<String>) -> AwsError {
        AwsError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    /// The response for a request of `info`'s protocol.
    pub(crate) fn response(&self, info: &RequestInfo) -> Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (body, content_type) = if info.json {
            let body = serde_json::json!({"__type": self.code, "message": self.message});
            (body.to_string(), "application/x-amz-json-1.1")
        } else if info.service.as_deref() == Some("ec2") {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
                 <Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                xml_escape(&self.code),
                xml_escape(&self.message)
            );
            (body, "text/xml;charset=UTF-8")
        } else {
            // The awsQuery error shape (STS, IAM, RDS, CloudFormation).
            let ns = match info.service.as_deref() {
                Some("sts") | None => " xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"",
                _ => "",
            };
            let body = format!(
                "<ErrorResponse{ns}>\n  <Error>\n    <Type>{}</Type>\n    <Code>{}</Code>\n    \
                 <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                if self.sender { "Sender" } else { "Receiver" },
                xml_escape(&self.code),
                xml_escape(&self.message)
            );
            (body, "text/xml")
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert("x-amzn-requestid", v);
        }
        if info.json
            && let Ok(v) = HeaderValue::from_str(&self.code)
        {
            h.insert("x-amzn-errortype", v);
        }
        resp
    }
}

pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..start + len]))
}

/// The raw inner XML of every `<tag>…</tag>` in `xml`, in order (elements
/// of that name must not nest).
pub(crate) fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let start = i + open.len();
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        out.push(&rest[start..start + len]);
        rest = &rest[start + len + close.len()..];
    }
    out
}

/// The text of every `<tag>…</tag>` in `xml`, entities decoded.
pub(crate) fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    xml_blocks(xml, tag).into_iter().map(xml_unescape).collect()
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_query_and_json_requests() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDX/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
            ),
        );
        let i = RequestInfo::read(
            &h,
            None,
            b"Action=RunInstances&ClientToken=tok-1&Version=2016-11-15",
        );
        assert_eq!(i.action.as_deref(), Some("RunInstances"));
        assert_eq!(i.service.as_deref(), Some("ec2"));
        assert_eq!(i.region.as_deref(), Some("us-east-1"));
        assert_eq!(i.access_key_id.as_deref(), Some("AKIDX"));
        assert_eq!(i.client_token.as_deref(), Some("tok-1"));
        assert!(!i.json);

        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.Encrypt"),
        );
        let i = RequestInfo::read(&h, None, br#"{"KeyId":"k","ClientToken":"t"}"#);
        assert_eq!(i.action.as_deref(), Some("Encrypt"));
        assert_eq!(i.client_token.as_deref(), Some("t"));
        assert_eq!(
            i.json_body.as_ref().and_then(|b| b.get("KeyId")),
            Some(&"k".into())
        );
        assert!(i.json);
    }

    #[test]
    fn xml_round_trip() {
        let xml = "<a><Arn>x&amp;y&lt;&#65;&#x42;</Arn></a>";
        assert_eq!(xml_text(xml, "Arn").as_deref(), Some("x&y<AB"));
        assert_eq!(xml_text(xml, "Nope"), None);
        let list = "<L><member>a</member><member>b&amp;c</member></L><member>d</member>";
        assert_eq!(xml_texts(list, "member"), ["a", "b&c", "d"]);
        assert_eq!(xml_blocks("<x><a>1</a>", "a"), ["1"]);
        assert!(xml_blocks("<a>1", "a").is_empty());
        assert_eq!(xml_escape("<&>"), "&lt;&amp;&gt;");
    }
}

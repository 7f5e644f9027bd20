//! Who may call each method, as the contract says: the `(tokens.v1.access)` method option,
//! read from the embedded descriptors.
//!
//! prost-types drops unknown fields, custom options included, so the descriptors are decoded
//! with messages that declare only the fields needed here (prost skips the rest). That is
//! five small structs against a dependency (prost-reflect) and its whole descriptor model, for
//! one enum field.

use prost::Message;

use crate::v1::Access;

/// The package whose methods the option governs: any of its methods not marked public is an
/// operator RPC.
pub const PACKAGE: &str = "tokens.v1";

/// One method of a service in the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// The gRPC path, `/<package>.<service>/<method>`.
    pub path: String,
    /// The method's name, as an operator policy's `rpcs` lists it.
    pub name: String,
    /// Its `(tokens.v1.access)` option; `Unspecified` when the method has none.
    pub access: Access,
}

/// Every method of every service of [`PACKAGE`] in [`FILE_DESCRIPTOR_SET`](crate::FILE_DESCRIPTOR_SET).
pub fn methods() -> Vec<Method> {
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set protoc wrote at build time decodes");
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
        for service in &file.service {
            for method in &service.method {
                let access = method
                    .options
                    .as_ref()
                    .and_then(|options| options.access)
                    .and_then(|value| Access::try_from(value).ok())
                    .unwrap_or(Access::Unspecified);
                methods.push(Method {
                    path: format!("/{PACKAGE}.{}/{}", service.name(), method.name()),
                    name: method.name().to_owned(),
                    access,
                });
            }
        }
    }
    methods
}

// google/protobuf/descriptor.proto, only the fields read above (same tags).

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorProto {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptions {
    /// `extend google.protobuf.MethodOptions { Access access = 50120; }` in tokens.proto.
    #[prost(enumeration = "Access", optional, tag = "50120")]
    access: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_the_access_the_contract_gives_it() {
        let got: Vec<(String, Access)> =
            methods().into_iter().map(|m| (m.path, m.access)).collect();
        let want = [
            ("/tokens.v1.TokenService/IssueTokenPair", Access::Operator),
            ("/tokens.v1.TokenService/RefreshTokenPair", Access::Public),
            ("/tokens.v1.TokenService/RevokeToken", Access::Public),
            ("/tokens.v1.TokenService/IntrospectToken", Access::Public),
            (
                "/tokens.v1.TokenService/ListRefreshEvents",
                Access::Operator,
            ),
            (
                "/tokens.v1.TokenService/SummarizeRefreshEvents",
                Access::Operator,
            ),
            // Public keys and the issuer: what every resource server needs, no secret.
            ("/tokens.v1.TokenService/GetJwks", Access::Public),
            (
                "/tokens.v1.TokenService/ListSubjectSessions",
                Access::Operator,
            ),
            (
                "/tokens.v1.TokenService/RevokeSubjectSessions",
                Access::Operator,
            ),
            ("/tokens.v1.ClientRegistry/CreateClient", Access::Operator),
            ("/tokens.v1.ClientRegistry/GetClient", Access::Operator),
            (
                "/tokens.v1.ClientRegistry/RotateClientSecret",
                Access::Operator,
            ),
            ("/tokens.v1.ClientRegistry/DeleteClient", Access::Operator),
        ]
        .map(|(path, access)| (path.to_owned(), access));
        assert_eq!(got, want);
    }
}

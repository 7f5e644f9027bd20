//! The deployment: `scripts/validate-manifests.sh` renders the kustomize base and overlays
//! (deploy/kubernetes) and validates them against the Kubernetes schemas; these tests run it
//! and then check the rendered objects for what the runbook and the design promise: gRPC
//! health probes on the gRPC port, a locked-down non-root pod, the keyring from a Secret that
//! no file in the repository holds, an HA production overlay, and a Dockerfile that agrees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The renderings by name (`base`, `dev`, `production`), from one run of the script.
fn rendered() -> &'static HashMap<String, Vec<Value>> {
    static RENDERED: OnceLock<HashMap<String, Vec<Value>>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let out = tempfile::tempdir().expect("temp dir");
        let output = Command::new("bash")
            .arg(repo().join("scripts/validate-manifests.sh"))
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "scripts/validate-manifests.sh failed (run `make deps` if its tools are missing):\n\
             {stdout}\n{stderr}"
        );
        let mut renderings = HashMap::new();
        for entry in std::fs::read_dir(out.path()).expect("rendered dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("rendering");
                let objects: Vec<Value> = serde_json::from_str(&text).expect("JSON rendering");
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                renderings.insert(name, objects);
            }
        }
        renderings
    })
}

fn rendering(name: &str) -> &'static [Value] {
    rendered()
        .get(name)
        .unwrap_or_else(|| panic!("no rendering {name}: {:?}", rendered().keys()))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn all_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn deployment(objects: &[Value]) -> &Value {
    find(objects, "Deployment", "token-server").expect("Deployment token-server")
}

fn container(objects: &[Value]) -> &Value {
    deployment(objects)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "token-server")
        .expect("container token-server")
}

/// The environment the container gets from its ConfigMap (followed by name, hash and all).
fn config_env(objects: &[Value]) -> HashMap<String, String> {
    let names: Vec<&str> = container(objects)["envFrom"]
        .as_array()
        .expect("envFrom")
        .iter()
        .filter_map(|source| source["configMapRef"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), 1, "one ConfigMap in envFrom");
    let config = find(objects, "ConfigMap", names[0]).expect("the envFrom ConfigMap");
    config["data"]
        .as_object()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

fn named_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// Seconds of a humantime value as the ConfigMap writes them (`30s`, `2m`).
fn seconds(value: &str) -> u64 {
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap());
    let number: u64 = number.parse().expect("a number");
    match unit {
        "s" => number,
        "m" => number * 60,
        other => panic!("unexpected unit {other} in {value}"),
    }
}

const SERVING_RENDERINGS: [&str; 2] = ["dev", "production"];

#[test]
fn the_base_and_every_overlay_render_and_validate() {
    let mut names: Vec<&String> = rendered().keys().collect();
    names.sort();
    assert_eq!(names, ["base", "dev", "monitoring", "production"]);
    for name in ["base", "dev", "production"] {
        deployment(rendering(name));
        gateway_deployment(rendering(name));
    }
}

#[test]
fn probes_use_grpc_health_on_the_grpc_port() {
    for name in SERVING_RENDERINGS {
        let objects = rendering(name);
        let container = container(objects);
        assert_eq!(named_port(container, "grpc"), 50051, "{name}");
        assert_eq!(
            port_of(&config_env(objects)["TOKEN_LISTEN"]),
            50051,
            "{name}"
        );
        // Readiness is grpc.health.v1, which follows Redis: a pod cut off from Redis leaves the
        // Service. With TLS on the gRPC port, the kubelet (which speaks no TLS) probes the
        // plaintext health-only listener, which must be a named container port.
        let env = config_env(objects);
        let readiness_port = match env.get("TOKEN_HEALTH_LISTEN").map(String::as_str) {
            None | Some("off") => {
                assert!(
                    !env.contains_key("TOKEN_TLS_CERT"),
                    "{name}: TLS without a plaintext health port"
                );
                50051
            }
            Some(addr) => {
                assert_eq!(named_port(container, "health"), port_of(addr), "{name}");
                port_of(addr)
            }
        };
        assert_eq!(
            container["readinessProbe"]["grpc"]["port"], readiness_port,
            "{name}"
        );
        // Startup and liveness must not follow Redis, or a Redis outage restarts every pod.
        for probe in ["startupProbe", "livenessProbe"] {
            let probe_value = &container[probe];
            assert!(probe_value.is_object(), "{name}: no {probe}");
            let grpc = &probe_value["grpc"];
            assert!(
                grpc.is_null() || grpc["service"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {probe} on the overall grpc.health status would restart pods while \
                 Redis is down"
            );
        }
        let service = find(objects, "Service", "token-server").expect("Service token-server");
        let grpc_port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "grpc")
            .expect("Service port grpc");
        assert_eq!(grpc_port["port"], 50051, "{name}");
        assert_eq!(grpc_port["appProtocol"], "grpc", "{name}");
    }
}

#[test]
fn metrics_are_scraped_where_the_admin_listener_is() {
    for name in SERVING_RENDERINGS {
        let objects = rendering(name);
        let admin = port_of(&config_env(objects)["TOKEN_ADMIN_LISTEN"]);
        assert_eq!(admin, 9090, "{name}");
        assert_eq!(named_port(container(objects), "metrics"), admin, "{name}");
        let annotations = &deployment(objects)["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(
            annotations["prometheus.io/port"],
            admin.to_string(),
            "{name}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        assert_eq!(config_env(objects)["TOKEN_LOG_FORMAT"], "json", "{name}");
    }
}

#[test]
fn the_pod_runs_non_root_read_only_and_without_privileges() {
    for name in ["base", "dev", "production"] {
        let objects = rendering(name);
        let pod = &deployment(objects)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert!(
            pod["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|uid| uid != 0),
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let account = pod["serviceAccountName"].as_str().expect("service account");
        let account = find(objects, "ServiceAccount", account).expect("its ServiceAccount");
        assert_eq!(account["automountServiceAccountToken"], false, "{name}");

        let security = &container(objects)["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let resources = &container(objects)["resources"];
        for field in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    resources[field][resource].is_string(),
                    "{name}: no {field}.{resource}"
                );
            }
        }
    }
}

#[test]
fn the_keyring_is_a_secret_file_readable_by_its_owner_only() {
    for name in ["base", "dev", "production"] {
        let objects = rendering(name);
        let pod = &deployment(objects)["spec"]["template"]["spec"];
        let container = container(objects);
        let keyring_env = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "TOKEN_KEYRING")
            .and_then(|e| e["value"].as_str())
            .expect("TOKEN_KEYRING");
        assert_eq!(keyring_env, "/etc/token-server/keyring/keyring", "{name}");
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| keyring_env.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .expect("a volume mounted where TOKEN_KEYRING points");
        assert_eq!(mount["readOnly"], true, "{name}");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the keyring volume");
        let secret = &volume["secret"];
        assert_eq!(secret["defaultMode"], 0o400, "{name}");
        assert!(
            secret["secretName"]
                .as_str()
                .is_some_and(|s| s.starts_with("token-keyring")),
            "{name}"
        );
    }
}

#[test]
fn shutdown_fits_in_the_termination_grace_period() {
    for name in SERVING_RENDERINGS {
        let objects = rendering(name);
        let pod = &deployment(objects)["spec"]["template"]["spec"];
        let timeout = seconds(&config_env(objects)["TOKEN_SHUTDOWN_TIMEOUT"]);
        let pre_stop = container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        // The drain, then the audit flush, each bounded by the shutdown timeout.
        assert!(
            grace > pre_stop + 2 * timeout,
            "{name}: grace {grace}s <= preStop {pre_stop}s + 2 x {timeout}s"
        );
    }
}

#[test]
fn production_is_spread_and_pinned() {
    let objects = rendering("production");
    let hpa = find(objects, "HorizontalPodAutoscaler", "token-server").expect("HPA");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 3, "{hpa}");
    let metric = &hpa["spec"]["metrics"][0]["resource"];
    assert_eq!(metric["name"], "cpu");
    assert_eq!(metric["target"]["averageUtilization"], 70);
    // The HPA owns the count; a replicas field would be re-applied over it.
    let replicas = &deployment(objects)["spec"]["replicas"];
    assert!(replicas.is_null() || replicas.as_u64().unwrap() >= 3);
    assert!(find(objects, "PodDisruptionBudget", "token-server").is_some());

    let pod = &deployment(objects)["spec"]["template"]["spec"];
    let anti = pod["affinity"]["podAntiAffinity"].to_string();
    assert!(anti.contains("kubernetes.io/hostname"), "{anti}");
    assert!(anti.contains("topology.kubernetes.io/zone"), "{anti}");
    let spread: Vec<&str> = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints")
        .iter()
        .filter_map(|c| c["topologyKey"].as_str())
        .collect();
    assert!(spread.contains(&"kubernetes.io/hostname"), "{spread:?}");
    assert!(
        spread.contains(&"topology.kubernetes.io/zone"),
        "{spread:?}"
    );

    let image = container(objects)["image"].as_str().unwrap();
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
    assert!(
        image.contains("@sha256:") || (!tag.is_empty() && !tag.contains('/') && tag != "latest"),
        "production image not pinned: {image}"
    );
    let redis = &config_env(objects)["TOKEN_REDIS_URL"];
    assert!(
        redis.starts_with("redis+sentinel://") && redis.ends_with("/mymaster"),
        "{redis}"
    );
}

#[test]
fn dev_runs_one_pod_against_its_own_redis() {
    let objects = rendering("dev");
    assert_eq!(deployment(objects)["spec"]["replicas"], 1);
    assert!(all_of(objects, "HorizontalPodAutoscaler").is_empty());
    assert_eq!(config_env(objects)["TOKEN_REDIS_URL"], "redis://redis:6379");
    let redis = find(objects, "StatefulSet", "redis").expect("StatefulSet redis");
    let pod = &redis["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["containers"][0]["image"]
            .as_str()
            .unwrap()
            .starts_with("redis:7")
    );
    assert!(
        !redis["spec"]["volumeClaimTemplates"]
            .as_array()
            .expect("volumeClaimTemplates")
            .is_empty()
    );
    let service = find(objects, "Service", "redis").expect("Service redis");
    assert_eq!(service["spec"]["ports"][0]["port"], 6379);
}

#[test]
fn network_policy_admits_callers_and_scraper_and_reaches_redis_dns_and_otlp() {
    for name in ["base", "dev", "production"] {
        let policy = find(rendering(name), "NetworkPolicy", "token-server").expect("policy");
        let ports = |direction: &str| -> Vec<u64> {
            policy["spec"][direction]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|rule| rule["ports"].as_array().unwrap())
                .filter_map(|p| p["port"].as_u64())
                .collect()
        };
        let ingress = ports("ingress");
        assert!(
            ingress.contains(&50051) && ingress.contains(&9090),
            "{ingress:?}"
        );
        let egress = ports("egress");
        for port in [53, 6379, 26379, 4317] {
            assert!(egress.contains(&port), "{name}: no egress to {port}");
        }
    }
}

/// Standard base64, as Kubernetes stores Secret data (kustomize wraps long values).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
    {
        let value = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .expect("base64 character") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// Lines shaped like a keyring entry: `<key-id> <secret> <sign|verify>`.
fn key_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 3 && matches!(fields[2], "sign" | "verify")
        })
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn no_signing_key_is_committed_or_rendered() {
    // The base and production hold no Secret at all: production's keyring is created outside
    // git. dev generates one from a git-ignored file, which the script replaces by a
    // placeholder.
    assert!(all_of(rendering("base"), "Secret").is_empty());
    assert!(all_of(rendering("production"), "Secret").is_empty());
    for name in ["base", "dev", "production"] {
        for secret in all_of(rendering(name), "Secret") {
            for (key, value) in secret["data"].as_object().into_iter().flatten() {
                let text = String::from_utf8(base64_decode(value.as_str().unwrap())).unwrap();
                assert!(
                    key_lines(&text).is_empty(),
                    "{name}: Secret {} key {key} holds key material",
                    secret["metadata"]["name"]
                );
            }
        }
    }

    // No file under deploy/ that git would commit holds a key line, and the dev overlay's
    // keyring file is ignored.
    let root = repo();
    let ignored = |path: &Path| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["check-ignore", "-q"])
            .arg(path)
            .status()
            .expect("git runs")
            .success()
    };
    assert!(
        ignored(&root.join("deploy/kubernetes/overlays/dev/keyring")),
        "the dev keyring file is not git-ignored"
    );
    let mut stack = vec![root.join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !ignored(&path)
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let keys = key_lines(&text);
                assert!(keys.is_empty(), "{} holds keys {keys:?}", path.display());
            }
        }
    }
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(dockerignore.lines().any(|l| l.trim() == "**/keyring"));
}

#[test]
fn the_dockerfile_agrees_with_the_manifests() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let objects = rendering("production");
    let env = config_env(objects);
    for key in ["TOKEN_LISTEN", "TOKEN_ADMIN_LISTEN", "TOKEN_LOG_FORMAT"] {
        assert!(
            dockerfile.contains(&format!("{key}={}", env[key])),
            "Dockerfile ENV {key} differs from the ConfigMap's {}",
            env[key]
        );
    }
    let uid = deployment(objects)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    assert!(
        dockerfile.contains(&format!("\nUSER {uid}:{uid}\n")),
        "USER {uid}"
    );
    assert!(dockerfile.contains("\nENTRYPOINT [\"/usr/local/bin/token-server\"]\n"));
    assert!(dockerfile.contains("cargo build --release --locked -p token-server"));
}

// ---- token-gateway ------------------------------------------------------------------------

fn gateway_deployment(objects: &[Value]) -> &Value {
    find(objects, "Deployment", "token-gateway").expect("Deployment token-gateway")
}

fn gateway_container(objects: &[Value]) -> &Value {
    gateway_deployment(objects)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "token-gateway")
        .expect("container token-gateway")
}

/// The gateway's environment from its ConfigMap.
fn gateway_env(objects: &[Value]) -> HashMap<String, String> {
    let name = gateway_container(objects)["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .expect("the gateway's envFrom ConfigMap");
    find(objects, "ConfigMap", name).expect("its ConfigMap")["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn service_port(objects: &[Value], service: &str, name: &str) -> u64 {
    find(objects, "Service", service)
        .unwrap_or_else(|| panic!("Service {service}"))["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["port"].as_u64())
        .unwrap_or_else(|| panic!("Service {service} has no port {name}"))
}

#[test]
fn the_gateway_runs_beside_the_server_locked_down_probed_and_scraped() {
    for name in SERVING_RENDERINGS.iter().chain(&["base"]) {
        let objects = rendering(name);
        let env = gateway_env(objects);
        let container = gateway_container(objects);
        let pod = &gateway_deployment(objects)["spec"]["template"]["spec"];

        // Listeners: HTTP and the admin port, as named container ports and Service ports.
        let http = port_of(&env["GATEWAY_LISTEN"]);
        let admin = port_of(&env["GATEWAY_ADMIN_LISTEN"]);
        assert_eq!((http, admin), (8080, 9091), "{name}");
        assert_eq!(named_port(container, "http"), http, "{name}");
        assert_eq!(named_port(container, "metrics"), admin, "{name}");
        assert_eq!(
            service_port(objects, "token-gateway", "http"),
            http,
            "{name}"
        );
        assert_eq!(
            service_port(objects, "token-gateway", "metrics"),
            admin,
            "{name}"
        );
        let annotations =
            &gateway_deployment(objects)["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"],
            admin.to_string(),
            "{name}"
        );
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        assert_eq!(env["GATEWAY_LOG_FORMAT"], "json", "{name}");

        // It calls the token server's Service on its gRPC port: over mutual TLS where the
        // server requires it (production), plaintext elsewhere.
        let scheme = if *name == "production" {
            "https"
        } else {
            "http"
        };
        let upstream = &env["GATEWAY_TOKEN_SERVICE"];
        assert_eq!(
            upstream,
            &format!(
                "{scheme}://token-server:{}",
                service_port(objects, "token-server", "grpc")
            ),
            "{name}"
        );

        // Readiness follows the token server (/healthz); liveness must not, or an outage of
        // the token server or Redis would restart every gateway.
        let readiness = &container["readinessProbe"]["httpGet"];
        assert_eq!(readiness["path"], "/healthz", "{name}");
        assert_eq!(readiness["port"], "http", "{name}");
        let liveness = &container["livenessProbe"]["httpGet"];
        assert!(liveness.is_object(), "{name}: no httpGet liveness probe");
        assert_ne!(
            liveness["path"], "/healthz",
            "{name}: liveness follows the token server"
        );
        assert_eq!(liveness["port"], "metrics", "{name}");

        // Non-root, read-only, no privileges, bounded.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for field in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][field][resource].is_string(),
                    "{name}: no {field}.{resource}"
                );
            }
        }

        // Termination: the preStop pause and the drain fit in the grace period.
        let drain = seconds(&env["GATEWAY_SHUTDOWN_TIMEOUT"]);
        let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace > pre_stop + drain,
            "{name}: grace {grace}s <= preStop {pre_stop}s + drain {drain}s"
        );
    }
    // Autoscaled and protected from drains where the server is; one pod in dev.
    for name in ["base", "production"] {
        let objects = rendering(name);
        let hpa = find(objects, "HorizontalPodAutoscaler", "token-gateway").expect("HPA");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "token-gateway");
        assert!(find(objects, "PodDisruptionBudget", "token-gateway").is_some());
        assert!(gateway_deployment(objects)["spec"]["replicas"].is_null());
    }
    let production = rendering("production");
    let hpa = find(production, "HorizontalPodAutoscaler", "token-gateway").unwrap();
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 3);
    let image = gateway_container(production)["image"].as_str().unwrap();
    assert!(
        image.ends_with(":0.1.0") && image.contains("/token-gateway"),
        "{image}"
    );
    let dev = rendering("dev");
    assert_eq!(gateway_deployment(dev)["spec"]["replicas"], 1);
    assert!(find(dev, "PodDisruptionBudget", "token-gateway").is_none());
    assert_eq!(gateway_container(dev)["image"], "token-gateway:dev");
}

#[test]
fn the_production_gateway_presents_its_certificate_mounted_read_only() {
    // The server's side: production requires client certificates on the port the gateway
    // calls, so a plaintext gateway could never become ready there.
    let production = rendering("production");
    let server_env = config_env(production);
    assert!(server_env.contains_key("TOKEN_TLS_CLIENT_CA"));

    let env = gateway_env(production);
    assert!(env["GATEWAY_TOKEN_SERVICE"].starts_with("https://"));
    // The name the server's certificate carries (its Certificate in deploy/README.md).
    assert_eq!(
        env["GATEWAY_TOKEN_SERVICE_TLS_NAME"],
        "token-server.tokens.svc"
    );
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    assert!(
        readme.contains("dnsNames: [token-server.tokens.svc"),
        "deploy/README.md's server Certificate no longer names token-server.tokens.svc"
    );
    let container = gateway_container(production);
    let pod = &gateway_deployment(production)["spec"]["template"]["spec"];
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let mut secrets = Vec::new();
    for (var, file) in [
        ("GATEWAY_TOKEN_SERVICE_CA", "ca.crt"),
        ("GATEWAY_TOKEN_SERVICE_CERT", "tls.crt"),
        ("GATEWAY_TOKEN_SERVICE_KEY", "tls.key"),
    ] {
        let path = &env[var];
        assert!(path.ends_with(&format!("/{file}")), "{var}={path}");
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("no volume mounted where {var} points"));
        assert_eq!(mount["readOnly"], true, "{var}");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        // Readable by the pod's group only (the files are the key's), and the group is the
        // gateway's.
        assert_eq!(volume["secret"]["defaultMode"], 0o440, "{var}");
        secrets.push(volume["secret"]["secretName"].as_str().unwrap().to_owned());
    }
    assert_eq!(secrets, ["token-gateway-tls"; 3]);
    assert_eq!(
        pod["securityContext"]["fsGroup"],
        pod["securityContext"]["runAsGroup"]
    );
    let reload = seconds(&env["GATEWAY_TOKEN_SERVICE_TLS_RELOAD_INTERVAL"]);
    assert!((1..=300).contains(&reload), "reload every {reload}s");

    // Elsewhere the server is plaintext, and so is the gateway: no TLS settings to trip on.
    for name in ["base", "dev"] {
        let env = gateway_env(rendering(name));
        let tls: Vec<_> = env
            .keys()
            .filter(|k| k.starts_with("GATEWAY_TOKEN_SERVICE_"))
            .collect();
        assert!(tls.is_empty(), "{name}: {tls:?}");
    }
}

/// `(from, ports)` of each rule in a NetworkPolicy direction (`from` or `to`, null when the
/// rule names no peers).
fn rules(policy: &Value, direction: &str) -> Vec<(Value, Vec<u64>)> {
    let peers = if direction == "ingress" { "from" } else { "to" };
    policy["spec"][direction]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let ports = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            (rule[peers].clone(), ports)
        })
        .collect()
}

#[test]
fn the_gateway_reaches_only_the_token_server_and_dns_and_the_server_admits_it() {
    let gateway_pods =
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "token-gateway"}});
    let server_pods =
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "token-server"}});
    for name in ["base", "dev", "production"] {
        let objects = rendering(name);
        let policy = find(objects, "NetworkPolicy", "token-gateway").expect("gateway policy");
        assert_eq!(policy["spec"]["podSelector"], gateway_pods, "{name}");
        let ingress: Vec<u64> = rules(policy, "ingress")
            .into_iter()
            .flat_map(|r| r.1)
            .collect();
        assert!(
            ingress.contains(&8080) && ingress.contains(&9091),
            "{name}: {ingress:?}"
        );
        let egress = rules(policy, "egress");
        assert!(!egress.is_empty(), "{name}");
        for (to, ports) in &egress {
            let to_server = to.as_array().is_some_and(|peers| {
                peers.len() == 1 && peers[0] == serde_json::json!({"podSelector": server_pods})
            });
            let to_dns = to.to_string().contains("kube-system") && ports.iter().all(|p| *p == 53);
            assert!(
                (to_server && ports == &[50051]) || to_dns,
                "{name}: gateway egress beyond the token server and DNS: {to} {ports:?}"
            );
        }
        assert!(egress.iter().any(|(_, ports)| ports == &[50051]), "{name}");

        let server = find(objects, "NetworkPolicy", "token-server").expect("server policy");
        let admits_gateway = rules(server, "ingress").iter().any(|(from, ports)| {
            ports.contains(&50051)
                && from
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|peer| peer["podSelector"] == gateway_pods)
        });
        assert!(
            admits_gateway,
            "{name}: token-server's policy does not admit the gateway"
        );
    }
}

#[test]
fn the_alert_rules_are_also_a_prometheus_rule() {
    // scripts/validate-manifests.sh has checked that its spec is alerts.yaml's groups and
    // passes promtool; here: it is there, and in no overlay (it needs the operator's CRDs).
    let monitoring = rendering("monitoring");
    let rule = find(monitoring, "PrometheusRule", "token-service").expect("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert!(
        rule["spec"]["groups"]
            .as_array()
            .is_some_and(|g| g.len() >= 4)
    );
    for name in ["base", "dev", "production"] {
        assert!(
            all_of(rendering(name), "PrometheusRule").is_empty(),
            "{name}"
        );
    }
}

#[test]
fn the_dockerfile_builds_the_gateway_image_the_manifests_use() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("\nFROM ${RUNTIME_IMAGE} AS token-gateway\n"));
    assert!(dockerfile.contains("-p token-gateway"));
    // The image's defaults are the base's settings; production then switches the token
    // service to https (its own ConfigMap values, checked above).
    let env = gateway_env(rendering("base"));
    for key in [
        "GATEWAY_LISTEN",
        "GATEWAY_ADMIN_LISTEN",
        "GATEWAY_TOKEN_SERVICE",
    ] {
        assert!(
            dockerfile.contains(&format!("{key}={}", env[key])),
            "Dockerfile ENV {key} differs from the ConfigMap's {}",
            env[key]
        );
    }
    let uid =
        gateway_deployment(rendering("production"))["spec"]["template"]["spec"]["securityContext"]
            ["runAsUser"]
            .as_u64()
            .unwrap();
    assert_eq!(uid, 65532);
}

//! The explorer's HTTP side: a few request threads over `tiny_http`, and one decode worker.

use super::{attribute_sliders, check_code, png, sliders, Info};
use crate::AnalysisError;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use tiny_http::{Header, Method, Request, Response, Server};
use vaelab_runs::LoadedRun;

const PAGE: &str = include_str!("page.html");
/// Request bodies larger than this are refused (a code of 100k floats is ~1.5 MB of JSON).
const MAX_BODY: u64 = 4 << 20;
const HTTP_THREADS: usize = 4;
const STOPPED: &str = "the decode worker has stopped";

#[derive(Clone, Debug)]
pub struct ExploreOptions {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// Test images offered as starting points.
    pub images: usize,
    /// Sliders for the most informative code elements.
    pub sliders: usize,
    pub checkpoint: Option<PathBuf>,
}

impl Default for ExploreOptions {
    fn default() -> Self {
        ExploreOptions { host: IpAddr::from([127, 0, 0, 1]), port: 8080, images: 64, sliders: 16, checkpoint: None }
    }
}

/// Work for the decode worker.
enum Job {
    /// Reply with PNG bytes, or `None` when a newer decode superseded this one.
    Decode(Vec<f32>, mpsc::Sender<Option<Vec<u8>>>),
    Prior(u64, mpsc::Sender<Vec<f32>>),
    Save(Vec<f32>, mpsc::Sender<Result<(PathBuf, PathBuf), String>>),
}

#[derive(Default)]
struct Queue {
    /// At most one pending decode: the newest.
    decode: Option<Job>,
    others: VecDeque<Job>,
    stop: bool,
}

struct Shared {
    info: Info,
    info_json: String,
    originals: Vec<Vec<u8>>,
    reconstructions: Vec<Vec<u8>>,
    codes: Vec<Vec<f32>>,
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Queue {
    /// Queues a job; a decode replaces (and answers as superseded) any decode not yet started.
    fn push(&mut self, job: Job) {
        if let Job::Decode(..) = job {
            if let Some(Job::Decode(_, stale)) = self.decode.replace(job) {
                let _ = stale.send(None);
            }
        } else {
            self.others.push_back(job);
        }
    }

    /// The next job: the newest decode first, then the others in order.
    fn pop(&mut self) -> Option<Job> {
        self.decode.take().or_else(|| self.others.pop_front())
    }
}

impl Shared {
    fn submit(&self, job: Job) {
        self.queue.lock().expect("queue lock").push(job);
        self.ready.notify_one();
    }

    /// Queues the job `make` builds around a reply channel and waits for the worker's answer;
    /// `None` when the worker has stopped.
    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Job) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        self.submit(make(tx));
        rx.recv().ok()
    }
}

/// A started explorer: bound, with its model loaded.
pub struct Explorer {
    server: Arc<Server>,
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub addr: SocketAddr,
}

impl Explorer {
    /// Loads the run, encodes its first test images and binds the server.
    pub fn start(run_dir: &Path, opts: &ExploreOptions) -> Result<Explorer, AnalysisError> {
        let run = LoadedRun::open(run_dir, opts.checkpoint.as_deref())?;
        // Directions and slider ranges come from a larger sample than the images offered.
        let codes = run.encode(run.test_images(opts.images.max(500)));
        let shape = run.image_shape();
        let offered = opts.images.min(codes.mu.len());
        let info = Info {
            run: run.spec.name.clone(),
            checkpoint_step: run.step,
            latent: run.latent_kind(),
            code_len: run.code_len(),
            image: shape,
            images: offered,
            sliders: sliders(&run, &codes, opts.sliders),
            attributes: attribute_sliders(&run, &codes),
        };
        let recon = run.decode(&codes.mu[..offered]);
        let shared = Arc::new(Shared {
            info_json: serde_json::to_string(&info).expect("info serializes"),
            info,
            originals: (0..offered).map(|i| png(codes.images.image(i), shape)).collect(),
            reconstructions: recon.iter().map(|r| png(r, shape)).collect(),
            codes: codes.mu[..offered].to_vec(),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let server = Server::http(SocketAddr::new(opts.host, opts.port))
            .map_err(|e| AnalysisError::Input(format!("cannot listen on {}:{}: {e}", opts.host, opts.port)))?;
        let addr = server.server_addr().to_ip().expect("an IP listener");
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("explore-decode".into())
            .spawn(move || decode_worker(run, &worker_shared))
            .expect("spawn the decode worker");
        Ok(Explorer { server: Arc::new(server), shared, worker: Mutex::new(Some(worker)), addr })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn info(&self) -> &Info {
        &self.shared.info
    }

    /// Serves requests on a few threads until the process ends (or [`Explorer::stop`]).
    pub fn serve(&self) {
        let threads: Vec<_> = (0..HTTP_THREADS)
            .map(|_| {
                let (server, shared) = (self.server.clone(), self.shared.clone());
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        handle(&shared, request);
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Stops serving: [`Explorer::serve`] returns and the worker ends (tests start and stop explorers).
    pub fn stop(&self) {
        for _ in 0..HTTP_THREADS {
            self.server.unblock();
        }
        self.shared.queue.lock().expect("queue lock").stop = true;
        self.shared.ready.notify_all();
        if let Some(w) = self.worker.lock().expect("worker lock").take() {
            let _ = w.join();
        }
    }
}

fn decode_worker(run: LoadedRun, shared: &Shared) {
    let shape = run.image_shape();
    loop {
        let job = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if q.stop {
                    return;
                }
                if let Some(j) = q.pop() {
                    break j;
                }
                q = shared.ready.wait(q).expect("queue lock");
            }
        };
        match job {
            Job::Decode(z, reply) => {
                let img = run.decode(&[z]).remove(0);
                let _ = reply.send(Some(png(&img, shape)));
            }
            Job::Prior(seed, reply) => {
                let z =
                    run.model.sample_prior(&run.store, vaelab_models::latent::PriorDraw::new(seed, "explore-prior", 1)).as_vec();
                let _ = reply.send(z);
            }
            Job::Save(z, reply) => {
                let _ = reply.send(save(&run, &z));
            }
        }
    }
}

/// Writes the decoded image and its code to `RUN_DIR/explore/saved-NNN.{png,json}`.
fn save(run: &LoadedRun, z: &[f32]) -> Result<(PathBuf, PathBuf), String> {
    let dir = vaelab_runs::paths::explore_dir(&run.dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let n = (0..).find(|k| !dir.join(format!("saved-{k:03}.png")).exists()).expect("a free name");
    let (png_path, json_path) = (dir.join(format!("saved-{n:03}.png")), dir.join(format!("saved-{n:03}.json")));
    let img = run.decode(&[z.to_vec()]).remove(0);
    std::fs::write(&png_path, png(&img, run.image_shape())).map_err(|e| format!("cannot write {}: {e}", png_path.display()))?;
    let record = serde_json::json!({ "run": run.spec.name, "checkpoint_step": run.step, "code": z });
    std::fs::write(&json_path, record.to_string()).map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    Ok((png_path, json_path))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn reply(request: Request, status: u16, content_type: &str, body: Vec<u8>) {
    let response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"));
    let _ = request.respond(response);
}

fn error(request: Request, status: u16, message: String) {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(request, status, "application/json", body.into_bytes());
}

/// The code in a `{"z": [...]}` body, checked.
fn read_code(request: &mut Request, code_len: usize) -> Result<Vec<f32>, String> {
    if request.body_length().is_some_and(|n| n as u64 > MAX_BODY) {
        return Err(format!("the body is larger than {MAX_BODY} bytes"));
    }
    let mut body = String::new();
    request.as_reader().take(MAX_BODY).read_to_string(&mut body).map_err(|e| format!("cannot read the body: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Body {
        z: Vec<f32>,
    }
    let b: Body = serde_json::from_str(&body).map_err(|e| format!("expected {{\"z\": [numbers]}}: {e}"))?;
    check_code(&b.z, code_len)?;
    Ok(b.z)
}

fn handle(shared: &Shared, mut request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    if path == "/" || path == "/index.html" {
        return reply(request, 200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec());
    }
    if path == "/api/info" {
        return reply(request, 200, "application/json", shared.info_json.clone().into_bytes());
    }
    let Some(rest) = path.strip_prefix("/api/runs/") else {
        return error(request, 404, format!("no such page: {path}"));
    };
    let (run, endpoint) = rest.split_once('/').unwrap_or((rest, ""));
    if run != shared.info.run {
        return error(request, 404, format!("unknown run `{run}`; this explorer serves `{}`", shared.info.run));
    }
    let index = |prefix: &str| -> Option<Result<usize, String>> {
        let tail = endpoint.strip_prefix(prefix)?;
        let i = tail.trim_end_matches(".png");
        Some(match i.parse::<usize>() {
            Ok(i) if i < shared.info.images => Ok(i),
            _ => Err(format!("image `{i}` is out of range; this explorer offers test images 0–{}", shared.info.images - 1)),
        })
    };
    match (&method, endpoint) {
        (Method::Get, "info") => reply(request, 200, "application/json", shared.info_json.clone().into_bytes()),
        (Method::Get, e) if e.starts_with("image/") || e.starts_with("reconstruction/") || e.starts_with("code/") => {
            let (kind, prefix) = match e {
                _ if e.starts_with("image/") => (0, "image/"),
                _ if e.starts_with("reconstruction/") => (1, "reconstruction/"),
                _ => (2, "code/"),
            };
            match index(prefix).expect("prefix matched") {
                Err(m) => error(request, 404, m),
                Ok(i) => match kind {
                    0 => reply(request, 200, "image/png", shared.originals[i].clone()),
                    1 => reply(request, 200, "image/png", shared.reconstructions[i].clone()),
                    _ => {
                        let body = serde_json::json!({ "z": shared.codes[i] }).to_string();
                        reply(request, 200, "application/json", body.into_bytes())
                    }
                },
            }
        }
        (Method::Get, "prior") => {
            let seed = query.split('&').find_map(|kv| kv.strip_prefix("seed=")).unwrap_or("0");
            let Ok(seed) = seed.parse::<u64>() else {
                return error(request, 400, format!("seed `{seed}` is not a non-negative integer"));
            };
            match shared.ask(|tx| Job::Prior(seed, tx)) {
                Some(z) => reply(request, 200, "application/json", serde_json::json!({ "z": z }).to_string().into_bytes()),
                None => error(request, 503, STOPPED.into()),
            }
        }
        (Method::Post, "decode") => match read_code(&mut request, shared.info.code_len) {
            Err(m) => error(request, 400, m),
            Ok(z) => match shared.ask(|tx| Job::Decode(z, tx)) {
                Some(Some(png)) => reply(request, 200, "image/png", png),
                Some(None) => error(request, 409, "superseded by a newer decode request".into()),
                None => error(request, 503, STOPPED.into()),
            },
        },
        (Method::Post, "save") => match read_code(&mut request, shared.info.code_len) {
            Err(m) => error(request, 400, m),
            Ok(z) => match shared.ask(|tx| Job::Save(z, tx)) {
                Some(Ok((png, json))) => {
                    let body = serde_json::json!({ "png": png, "json": json }).to_string();
                    reply(request, 200, "application/json", body.into_bytes())
                }
                Some(Err(m)) => error(request, 500, m),
                None => error(request, 503, STOPPED.into()),
            },
        },
        (Method::Get | Method::Post, _) => error(request, 404, format!("no such endpoint: {endpoint}")),
        _ => error(request, 405, format!("method {method} is not allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_decode_supersedes_one_not_yet_started() {
        let mut q = Queue::default();
        let (first, first_rx) = mpsc::channel();
        let (second, second_rx) = mpsc::channel();
        let (prior, _prior_rx) = mpsc::channel();
        q.push(Job::Decode(vec![1.0], first));
        q.push(Job::Prior(7, prior));
        q.push(Job::Decode(vec![2.0], second));
        // The first decode is answered "superseded" at once; the newest decode runs first.
        assert_eq!(first_rx.try_recv(), Ok(None));
        assert!(matches!(q.pop(), Some(Job::Decode(z, _)) if z == vec![2.0]));
        assert!(matches!(q.pop(), Some(Job::Prior(7, _))));
        assert!(q.pop().is_none());
        assert!(second_rx.try_recv().is_err(), "the newest decode is still waiting for its image");
    }
}

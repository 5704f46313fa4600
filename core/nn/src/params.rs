//! The parameter store: every trainable tensor and buffer of a model, by hierarchical name
//! (`encoder.0.weight`), with run-time shapes. dfdx's own module system needs compile-time shapes,
//! so optimizers and checkpoints work over this store instead.

use dfdx::prelude::*;
use vaelab_datasets::StreamRng;

/// Flat storage of one parameter; layers reshape views of it as they need.
pub type Flat<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// U(−b, b) with b = 1/√fan_in: PyTorch's default for Linear and Conv weights and biases
    /// (He et al. 2015's Kaiming-uniform with a = √5 reduces to this bound).
    FanInUniform {
        fan_in: usize,
    },
    /// U(−a, a) (plugin blocks may ask for it).
    Uniform {
        a: f32,
    },
}

/// Which optimizer updates a tensor. Buffers (BatchNorm running statistics) are never updated by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Trainable,
    Buffer,
}

/// The part of a model a parameter belongs to, set by the builder that creates it (the store's
/// current group, [`ParamStore::in_group`]) and never read from its name: optimizers choose their
/// parameters by group, so renaming a layer cannot move a parameter to another optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGroup {
    /// The encoder and the latent's heads and codebook (also what a store builds outside any group).
    Encoder,
    /// The decoder and the likelihood's parameters.
    Decoder,
    /// A GAN's discriminator.
    Discriminator,
    /// A learned prior over codes, fitted after the model.
    Prior,
}

pub struct Param<D: Device<f32>> {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub role: Role,
    pub group: ParamGroup,
    pub tensor: Flat<D>,
}

/// Index of a parameter in its store; layers hold these instead of tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

pub struct ParamStore<D: Device<f32>> {
    pub dev: D,
    seed: u64,
    params: Vec<Param<D>>,
    /// The group new parameters join.
    group: ParamGroup,
}

impl<D: Device<f32>> ParamStore<D> {
    /// An empty store whose initial values derive from `seed` and each parameter's name, so adding
    /// a layer never changes the initial values of the others.
    pub fn new(dev: D, seed: u64) -> Self {
        ParamStore { dev, seed, params: Vec::new(), group: ParamGroup::Encoder }
    }

    /// Runs `build` with every parameter it creates in `group`.
    pub fn in_group<R>(&mut self, group: ParamGroup, build: impl FnOnce(&mut Self) -> R) -> R {
        let outer = std::mem::replace(&mut self.group, group);
        let built = build(self);
        self.group = outer;
        built
    }

    /// Creates a parameter. Names must be unique.
    pub fn add(&mut self, name: String, shape: Vec<usize>, init: Init, role: Role) -> ParamId {
        assert!(self.params.iter().all(|p| p.name != name), "duplicate parameter name {name}");
        let values = initial_values(self.seed, &name, shape.iter().product(), init);
        let tensor = self.dev.tensor_from_vec(values, (shape.iter().product::<usize>(),));
        self.params.push(Param { name, shape, init, role, group: self.group, tensor });
        ParamId(self.params.len() - 1)
    }

    pub fn get(&self, id: ParamId) -> &Param<D> {
        &self.params[id.0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param<D>> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Replaces a parameter's values (optimizer steps, checkpoint loads, running statistics).
    pub fn set(&mut self, id: ParamId, tensor: Flat<D>) {
        assert_eq!(tensor.shape().0, self.params[id.0].tensor.shape().0, "size of {}", self.params[id.0].name);
        self.params[id.0].tensor = tensor;
    }

    pub fn set_values(&mut self, id: ParamId, values: Vec<f32>) {
        let n = values.len();
        let t = self.dev.tensor_from_vec(values, (n,));
        self.set(id, t);
    }
}

fn initial_values(seed: u64, name: &str, n: usize, init: Init) -> Vec<f32> {
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::FanInUniform { .. } | Init::Uniform { .. } => {
            let bound = match init {
                Init::Uniform { a } => a as f64,
                Init::FanInUniform { fan_in } => 1.0 / (fan_in.max(1) as f64).sqrt(),
                _ => unreachable!(),
            };
            let mut rng = StreamRng::new(seed, &[vaelab_datasets::tag("init"), vaelab_datasets::tag(name)]);
            (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect()
        }
    }
}

//! Token scopes (`repository:NAME:pull,push`): typed, and formatted in one place.

use std::fmt;

/// What a token is asked to allow on one repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Pull,
    PullPush,
}

/// One repository and the access wanted on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub repository: String,
    pub access: Access,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_owned(),
            access: Access::Pull,
        }
    }

    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_owned(),
            access: Access::PullPush,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions = match self.access {
            Access::Pull => "pull",
            Access::PullPush => "pull,push",
        };
        write!(f, "repository:{}:{actions}", self.repository)
    }
}

/// The scopes one request needs (a push with cross-repository mounts needs several; checking
/// credentials, none). Tokens are cached per set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    /// No scope: a token for the registry as a whole.
    pub fn none() -> Scopes {
        Scopes(Vec::new())
    }

    pub fn pull(repository: &str) -> Scopes {
        Scopes(vec![Scope::pull(repository)])
    }

    pub fn push(repository: &str) -> Scopes {
        Scopes(vec![Scope::push(repository)])
    }

    /// Add `scope` unless it is there already.
    pub fn with(mut self, scope: Scope) -> Scopes {
        if !self.0.contains(&scope) {
            self.0.push(scope);
        }
        self
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, as the `scope` parameter of a token request may combine them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_format_as_the_token_protocol_says() {
        let s = Scopes::push("a/b")
            .with(Scope::pull("c"))
            .with(Scope::pull("c"));
        assert_eq!(s.to_string(), "repository:a/b:pull,push repository:c:pull");
        assert_eq!(Scopes::none().to_string(), "");
    }
}

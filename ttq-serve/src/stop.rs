//! Stop strings over streamed text: text is released only once it cannot be the start of a
//! stop string, so a client never sees part of a stop string it asked to end on.

/// Holds back streamed text that may still turn into one of the stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    hit: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            hit: false,
        }
    }

    /// Whether a stop string has been seen.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Adds `piece` and returns the text that can be released now. After a stop string is
    /// seen, the text before it is released and everything later is dropped.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.pending.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.hit = true;
            self.pending.truncate(at);
            return std::mem::take(&mut self.pending);
        }
        let keep = self.longest_stop_prefix_suffix();
        let release = self.pending.len() - keep;
        let rest = self.pending.split_off(release);
        std::mem::replace(&mut self.pending, rest)
    }

    /// The text still held back (call at the end of a generation that hit no stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length in bytes of the longest suffix of `pending` that is a proper prefix of a stop
    /// string (always on a character boundary).
    fn longest_stop_prefix_suffix(&self) -> usize {
        let p = &self.pending;
        (1..=p.len())
            .rev()
            .filter(|&n| p.is_char_boundary(p.len() - n))
            .find(|&n| {
                let tail = &p[p.len() - n..];
                self.stops
                    .iter()
                    .any(|s| s.len() > n && s.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns (released text, hit).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out.push_str(&m.push(p));
        }
        if !m.hit() {
            out.push_str(&m.finish());
        }
        (out, m.hit())
    }

    #[test]
    fn a_stop_string_split_over_pieces_is_never_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), "abc ");
        assert_eq!(m.push("N"), "");
        assert_eq!(m.push("D and more"), "");
        assert!(m.hit());
        assert_eq!(m.push("later"), "");
    }

    #[test]
    fn a_false_start_is_released_once_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("xE"), "x");
        assert_eq!(m.push("Nx"), "ENx");
        assert!(!m.hit());
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        assert_eq!(
            run(&["\n\n", "!"], &["hi", "\n", "\nyo!"]),
            ("hi".into(), true)
        );
    }

    #[test]
    fn without_a_match_all_text_comes_out_in_order() {
        assert_eq!(run(&["zz"], &["a", "z", "b", "z"]), ("azbz".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a"]), ("a".into(), false));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(run(&["éé"], &["aé", "b", "é", "é"]), ("aéb".into(), true));
        assert_eq!(run(&["ü!"], &["üü"]), ("üü".into(), false));
    }
}

//! VADER sentiment (Hutto & Gilbert 2014), ported from vaderSentiment 3.3.2: the quickstart's
//! deterministic "gold" reward.
//!
//! The DPO paper's controlled-sentiment experiment scores IMDb continuations with a sentiment
//! classifier; the quickstart uses VADER's compound score in [-1, 1] instead, which needs no
//! model weights and gives the same number on every machine. The lexicon (7,517 tokens with a
//! mean human valence rating) is embedded from `assets/vader_lexicon.txt` (MIT, see
//! `assets/PROVENANCE.md`).
//!
//! The rules are those of vaderSentiment 3.3.2, quirks included, so that scores match the Python
//! package (tested to 1e-3 on a fixture of sentences scored by it): booster and dampener words
//! (scaled down with distance), ALL-CAPS emphasis when the text mixes case, negation of the three
//! preceding words (scalar -0.74), "no" as a negator, "never so/this" intensification, "without
//! doubt", "least", the contrastive "but" (half weight before, 1.5x after, with the reference's
//! first-equal-value indexing), a few idioms, and emphasis from `!` and `?`. The sum is squashed
//! by `x / sqrt(x^2 + 15)`.
//!
//! Not ported: the reference first replaces emoji with their English descriptions (from a second
//! lexicon); here emoji are ordinary tokens, which usually carry no valence. Scores are returned
//! unrounded (the reference rounds `compound` to 4 decimals and the proportions to 3).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Increment of a booster word ("very", "extremely").
const B_INCR: f64 = 0.293;
/// Increment of a dampener word ("barely", "somewhat").
const B_DECR: f64 = -0.293;
/// Increment of an ALL-CAPS word in a text that is not all caps.
const C_INCR: f64 = 0.733;
/// Scalar applied to a negated valence.
const N_SCALAR: f64 = -0.74;
/// The `alpha` of the normalisation `x / sqrt(x^2 + alpha)`.
const ALPHA: f64 = 15.0;

/// Negating words (lower case); any word containing "n't" negates too.
const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

/// Words that scale the valence of the word they precede.
const BOOSTERS: &[(&str, f64)] = &[
    ("absolutely", B_INCR),
    ("amazingly", B_INCR),
    ("awfully", B_INCR),
    ("completely", B_INCR),
    ("considerable", B_INCR),
    ("considerably", B_INCR),
    ("decidedly", B_INCR),
    ("deeply", B_INCR),
    ("effing", B_INCR),
    ("enormous", B_INCR),
    ("enormously", B_INCR),
    ("entirely", B_INCR),
    ("especially", B_INCR),
    ("exceptional", B_INCR),
    ("exceptionally", B_INCR),
    ("extreme", B_INCR),
    ("extremely", B_INCR),
    ("fabulously", B_INCR),
    ("flipping", B_INCR),
    ("flippin", B_INCR),
    ("frackin", B_INCR),
    ("fracking", B_INCR),
    ("fricking", B_INCR),
    ("frickin", B_INCR),
    ("frigging", B_INCR),
    ("friggin", B_INCR),
    ("fully", B_INCR),
    ("fuckin", B_INCR),
    ("fucking", B_INCR),
    ("fuggin", B_INCR),
    ("fugging", B_INCR),
    ("greatly", B_INCR),
    ("hella", B_INCR),
    ("highly", B_INCR),
    ("hugely", B_INCR),
    ("incredible", B_INCR),
    ("incredibly", B_INCR),
    ("intensely", B_INCR),
    ("major", B_INCR),
    ("majorly", B_INCR),
    ("more", B_INCR),
    ("most", B_INCR),
    ("particularly", B_INCR),
    ("purely", B_INCR),
    ("quite", B_INCR),
    ("really", B_INCR),
    ("remarkably", B_INCR),
    ("so", B_INCR),
    ("substantially", B_INCR),
    ("thoroughly", B_INCR),
    ("total", B_INCR),
    ("totally", B_INCR),
    ("tremendous", B_INCR),
    ("tremendously", B_INCR),
    ("uber", B_INCR),
    ("unbelievably", B_INCR),
    ("unusually", B_INCR),
    ("utter", B_INCR),
    ("utterly", B_INCR),
    ("very", B_INCR),
    ("almost", B_DECR),
    ("barely", B_DECR),
    ("hardly", B_DECR),
    ("just enough", B_DECR),
    ("kind of", B_DECR),
    ("kinda", B_DECR),
    ("kindof", B_DECR),
    ("kind-of", B_DECR),
    ("less", B_DECR),
    ("little", B_DECR),
    ("marginal", B_DECR),
    ("marginally", B_DECR),
    ("occasional", B_DECR),
    ("occasionally", B_DECR),
    ("partly", B_DECR),
    ("scarce", B_DECR),
    ("scarcely", B_DECR),
    ("slight", B_DECR),
    ("slightly", B_DECR),
    ("somewhat", B_DECR),
    ("sort of", B_DECR),
    ("sorta", B_DECR),
    ("sortof", B_DECR),
    ("sort-of", B_DECR),
];

/// Phrases whose valence replaces that of the word they contain.
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// The embedded VADER lexicon (token, mean valence, standard deviation, ten ratings).
const LEXICON_TSV: &str = include_str!("../assets/vader_lexicon.txt");

/// VADER's scores of one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentimentScores {
    /// Proportion of the text's weight that is negative, in [0, 1].
    pub neg: f64,
    /// Proportion that is neutral, in [0, 1].
    pub neu: f64,
    /// Proportion that is positive, in [0, 1].
    pub pos: f64,
    /// Normalised sum of valences, in [-1, 1]: the single sentiment score.
    pub compound: f64,
}

/// A VADER scorer: the lexicon plus the rules.
#[derive(Debug, Clone)]
pub struct SentimentAnalyzer {
    lexicon: HashMap<String, f64>,
}

impl Default for SentimentAnalyzer {
    /// The analyzer with the embedded vaderSentiment 3.3.2 lexicon.
    fn default() -> Self {
        Self::from_lexicon(LEXICON_TSV)
    }
}

/// The shared analyzer with the embedded lexicon, parsed once.
pub fn analyzer() -> &'static SentimentAnalyzer {
    static ANALYZER: OnceLock<SentimentAnalyzer> = OnceLock::new();
    ANALYZER.get_or_init(SentimentAnalyzer::default)
}

/// The compound VADER score of `text`, in [-1, 1] (the quickstart's gold reward).
pub fn compound(text: &str) -> f64 {
    analyzer().polarity_scores(text).compound
}

/// The reference's `str.isupper()`: some cased character and no lower-case one.
fn is_upper(word: &str) -> bool {
    let mut cased = false;
    for c in word.chars() {
        if c.is_lowercase() {
            return false;
        }
        if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

/// Python's `str.isspace()`: Unicode white space plus the ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Strips ASCII punctuation from both ends unless that leaves 2 characters or fewer, which keeps
/// emoticons like `:)` and short words like `a!` whole (as the reference does).
fn strip_punctuation_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| c.is_ascii_punctuation());
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

fn booster(word_lower: &str) -> Option<f64> {
    BOOSTERS
        .iter()
        .find(|(w, _)| *w == word_lower)
        .map(|(_, v)| *v)
}

fn special_case(phrase: &str) -> Option<f64> {
    SPECIAL_CASES
        .iter()
        .find(|(w, _)| *w == phrase)
        .map(|(_, v)| *v)
}

/// Whether a single (lower-case) word negates.
fn is_negation(word_lower: &str) -> bool {
    NEGATE.contains(&word_lower) || word_lower.contains("n't")
}

/// The tokens of a text with their lower-case forms.
struct Tokens<'a> {
    words: Vec<&'a str>,
    lower: Vec<String>,
    /// Whether some but not all tokens are ALL CAPS (caps then signal emphasis).
    is_cap_diff: bool,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        let words: Vec<&str> = text
            .split(is_py_space)
            .filter(|w| !w.is_empty())
            .map(strip_punctuation_if_word)
            .collect();
        let lower = words.iter().map(|w| w.to_lowercase()).collect();
        let all_caps = words.iter().filter(|w| is_upper(w)).count();
        let is_cap_diff = all_caps > 0 && all_caps < words.len();
        Tokens {
            words,
            lower,
            is_cap_diff,
        }
    }
}

impl SentimentAnalyzer {
    /// An analyzer from lexicon text in VADER's format: one `token<TAB>valence<TAB>...` per line.
    pub fn from_lexicon(tsv: &str) -> Self {
        let mut lexicon = HashMap::new();
        for line in tsv.split('\n') {
            let line = line.trim();
            let mut fields = line.split('\t');
            if let (Some(word), Some(measure)) = (fields.next(), fields.next())
                && let Ok(v) = measure.trim().parse::<f64>()
            {
                lexicon.insert(word.to_string(), v);
            }
        }
        SentimentAnalyzer { lexicon }
    }

    /// The lexicon valence of a lower-case token, if it has one.
    pub fn valence(&self, word_lower: &str) -> Option<f64> {
        self.lexicon.get(word_lower).copied()
    }

    /// Tokens in the lexicon.
    pub fn lexicon_len(&self) -> usize {
        self.lexicon.len()
    }

    fn in_lexicon(&self, word_lower: &str) -> bool {
        self.lexicon.contains_key(word_lower)
    }

    /// VADER's negative, neutral, positive proportions and compound score of `text`.
    pub fn polarity_scores(&self, text: &str) -> SentimentScores {
        let tokens = Tokens::new(text);
        let n = tokens.words.len();
        let mut sentiments = Vec::with_capacity(n);
        for i in 0..n {
            let lower = tokens.lower[i].as_str();
            // Boosters, and "kind" of "kind of", modify their neighbours and carry nothing themselves.
            if booster(lower).is_some()
                || (lower == "kind" && i + 1 < n && tokens.lower[i + 1] == "of")
            {
                sentiments.push(0.0);
                continue;
            }
            sentiments.push(self.sentiment_valence(&tokens, i));
        }
        but_check(&tokens.lower, &mut sentiments);
        score_valence(&sentiments, text)
    }

    /// The valence of token `i` after its neighbours' modifiers, negations and idioms.
    fn sentiment_valence(&self, tokens: &Tokens, i: usize) -> f64 {
        let words = &tokens.words;
        let lower = &tokens.lower;
        let item = words[i];
        let Some(base) = self.valence(&lower[i]) else {
            return 0.0;
        };
        let mut valence = base;
        // "no" before a sentiment word negates it rather than counting as negative itself.
        if lower[i] == "no" && i + 1 < words.len() && self.in_lexicon(&lower[i + 1]) {
            valence = 0.0;
        }
        if (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
        {
            valence = base * N_SCALAR;
        }
        if is_upper(item) && tokens.is_cap_diff {
            valence += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        for start_i in 0..3 {
            if i > start_i && !self.in_lexicon(&lower[i - (start_i + 1)]) {
                let mut s = scalar_inc_dec(
                    words[i - (start_i + 1)],
                    &lower[i - (start_i + 1)],
                    valence,
                    tokens.is_cap_diff,
                );
                if start_i == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start_i == 2 && s != 0.0 {
                    s *= 0.9;
                }
                valence += s;
                valence = negation_check(valence, lower, start_i, i);
                if start_i == 2 {
                    valence = special_idioms_check(valence, lower, i);
                }
            }
        }
        self.least_check(valence, lower, i)
    }

    /// "least" before a word negates it, except in "at least" and "very least".
    fn least_check(&self, valence: f64, lower: &[String], i: usize) -> f64 {
        if i > 1 && !self.in_lexicon(&lower[i - 1]) && lower[i - 1] == "least" {
            if lower[i - 2] != "at" && lower[i - 2] != "very" {
                return valence * N_SCALAR;
            }
        } else if i > 0 && !self.in_lexicon(&lower[i - 1]) && lower[i - 1] == "least" {
            return valence * N_SCALAR;
        }
        valence
    }
}

/// The increment a booster or dampener word adds to the valence it modifies (0 for other words).
fn scalar_inc_dec(word: &str, word_lower: &str, valence: f64, is_cap_diff: bool) -> f64 {
    let Some(mut scalar) = booster(word_lower) else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar = -scalar;
    }
    if is_upper(word) && is_cap_diff {
        scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
    }
    scalar
}

/// Negation by the word `start_i + 1` places before `i`, with "never so/this" and "without doubt".
fn negation_check(valence: f64, lower: &[String], start_i: usize, i: usize) -> f64 {
    let w = |back: usize| lower[i - back].as_str();
    match start_i {
        0 if is_negation(w(1)) => return valence * N_SCALAR,
        1 => {
            if w(2) == "never" && (w(1) == "so" || w(1) == "this") {
                return valence * 1.25;
            } else if w(2) == "without" && w(1) == "doubt" {
                return valence;
            } else if is_negation(w(2)) {
                return valence * N_SCALAR;
            }
        }
        2 => {
            // The reference groups this as `(never and (so or this)) or (so or this)`: any "so" or
            // "this" right before the word intensifies it. Kept for fidelity.
            if (w(3) == "never" && (w(2) == "so" || w(2) == "this"))
                || (w(1) == "so" || w(1) == "this")
            {
                return valence * 1.25;
            } else if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") {
                return valence;
            } else if is_negation(w(3)) {
                return valence * N_SCALAR;
            }
        }
        _ => {}
    }
    valence
}

/// Replaces the valence of a word inside a known phrase, and adds multi-word boosters ("kind of").
fn special_idioms_check(mut valence: f64, lower: &[String], i: usize) -> f64 {
    let onezero = format!("{} {}", lower[i - 1], lower[i]);
    let twoonezero = format!("{} {} {}", lower[i - 2], lower[i - 1], lower[i]);
    let twoone = format!("{} {}", lower[i - 2], lower[i - 1]);
    let threetwoone = format!("{} {} {}", lower[i - 3], lower[i - 2], lower[i - 1]);
    let threetwo = format!("{} {}", lower[i - 3], lower[i - 2]);
    for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
        if let Some(v) = special_case(seq) {
            valence = v;
            break;
        }
    }
    if lower.len() - 1 > i
        && let Some(v) = special_case(&format!("{} {}", lower[i], lower[i + 1]))
    {
        valence = v;
    }
    if lower.len() - 1 > i + 1
        && let Some(v) = special_case(&format!("{} {} {}", lower[i], lower[i + 1], lower[i + 2]))
    {
        valence = v;
    }
    for ngram in [&threetwoone, &threetwo, &twoone] {
        if let Some(b) = booster(ngram) {
            valence += b;
        }
    }
    valence
}

/// The contrastive "but": sentiment before the first "but" counts half, after it 1.5 times.
///
/// The reference finds each value's position with `list.index(value)`, i.e. the *first* entry
/// equal to it, and rewrites that entry in place while iterating; this reproduces that exactly,
/// so that repeated valences are treated as the reference treats them.
fn but_check(lower: &[String], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else {
        return;
    };
    for k in 0..sentiments.len() {
        let value = sentiments[k];
        let si = sentiments.iter().position(|&s| s == value).unwrap_or(k);
        if si < bi {
            sentiments[si] = value * 0.5;
        } else if si > bi {
            sentiments[si] = value * 1.5;
        }
    }
}

/// Emphasis from `!` (up to 4, 0.292 each) and from two or more `?`.
fn punctuation_emphasis(text: &str) -> f64 {
    let exclamations = text.matches('!').count().min(4) as f64 * 0.292;
    let questions = text.matches('?').count();
    let question_emphasis = match questions {
        0 | 1 => 0.0,
        2 | 3 => questions as f64 * 0.18,
        _ => 0.96,
    };
    exclamations + question_emphasis
}

/// `x / sqrt(x^2 + alpha)`, clamped to [-1, 1].
fn normalize(score: f64) -> f64 {
    (score / (score * score + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

fn score_valence(sentiments: &[f64], text: &str) -> SentimentScores {
    if sentiments.is_empty() {
        return SentimentScores {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    let emphasis = punctuation_emphasis(text);
    let mut sum: f64 = sentiments.iter().sum();
    if sum > 0.0 {
        sum += emphasis;
    } else if sum < 0.0 {
        sum -= emphasis;
    }
    let compound = normalize(sum);

    // Each sentiment word counts 1 more than its valence, so that neutral words (counted 1 each)
    // are on the same scale.
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0, 0.0, 0.0);
    for &s in sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1.0;
        }
    }
    if pos_sum > f64::abs(neg_sum) {
        pos_sum += emphasis;
    } else if pos_sum < f64::abs(neg_sum) {
        neg_sum -= emphasis;
    }
    let total = pos_sum + neg_sum.abs() + neu_count;
    SentimentScores {
        neg: (neg_sum / total).abs(),
        neu: (neu_count / total).abs(),
        pos: (pos_sum / total).abs(),
        compound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_loads_completely() {
        let a = analyzer();
        assert_eq!(
            a.lexicon_len(),
            7506,
            "7,520 lines, 14 tokens listed twice (the later wins)"
        );
        assert_eq!(a.valence("good"), Some(1.9));
        assert_eq!(a.valence("ok"), Some(1.2));
        assert_eq!(a.valence(":)"), Some(2.0));
    }

    #[test]
    fn rules_move_scores_the_right_way() {
        let good = compound("The movie was good.");
        assert!(good > 0.0);
        assert!(compound("The movie was VERY good.") > compound("The movie was very good."));
        assert!(compound("The movie was very good.") > good);
        assert!(compound("The movie was good!!!") > good);
        assert!(compound("The movie was not good.") < 0.0);
        assert!(compound("The movie was kind of good.") < good);
        assert!(compound("The movie was GOOD.") > good);
        assert_eq!(compound(""), 0.0);
        assert_eq!(compound("The movie was on Tuesday."), 0.0);
    }

    #[test]
    fn normalisation_is_bounded() {
        assert!((normalize(1.9) - 1.9 / (1.9f64 * 1.9 + 15.0).sqrt()).abs() < 1e-15);
        let long = "great ".repeat(1000);
        let c = compound(&long);
        assert!(c > 0.99 && c <= 1.0);
    }

    #[test]
    fn proportions_sum_to_one() {
        let s = analyzer().polarity_scores("I love this, but the ending was terrible and sad.");
        assert!((s.neg + s.neu + s.pos - 1.0).abs() < 1e-12, "{s:?}");
    }
}

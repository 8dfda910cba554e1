//! Reading manifests for `onus check`: files, directories (recursively: `*.yaml`, `*.yml`,
//! `*.json`) and `-` (stdin); multi-document YAML, JSON (one value or a stream of them) and
//! `List` objects. Every object keeps the file and line it starts at; a file that cannot be
//! read or parsed becomes an [`InputError`] with file, line and reason, and the other files are
//! still read.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use serde_json::{Value, value::RawValue};

/// Where an object starts: file (`<stdin>` for `-`) and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub file: Arc<str>,
    pub line: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One object read from the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub source: Source,
    pub value: Value,
}

/// Input that could not be read: the file, the line when known, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Everything read from the paths (a reader thread's part: one file, each object prepared).
#[derive(Debug)]
pub struct Loaded<T = Object> {
    pub objects: Vec<T>,
    pub errors: Vec<InputError>,
    /// Files read (stdin counts as one).
    pub files: usize,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded {
            objects: Vec::new(),
            errors: Vec::new(),
            files: 0,
        }
    }
}

/// Where the reader puts what it reads, in input order: each object as soon as its document
/// is parsed (so a caller can project it and drop it: `onus check` streams), each error, and
/// each file opened. With [`read_paths_prepared`], each object as the reader thread prepared it.
pub trait Sink<T = Object> {
    fn object(&mut self, object: T);
    fn error(&mut self, error: InputError);
    fn file(&mut self);
}

impl<T> Sink<T> for Loaded<T> {
    fn object(&mut self, object: T) {
        self.objects.push(object);
    }
    fn error(&mut self, error: InputError) {
        self.errors.push(error);
    }
    fn file(&mut self) {
        self.files += 1;
    }
}

/// A [`Sink`] of objects that prepares each and hands it to a sink of prepared objects.
struct Preparing<'a, T> {
    prepare: &'a (dyn Fn(Object) -> T + Sync),
    sink: &'a mut dyn Sink<T>,
}

impl<T> Sink for Preparing<'_, T> {
    fn object(&mut self, object: Object) {
        self.sink.object((self.prepare)(object));
    }
    fn error(&mut self, error: InputError) {
        self.sink.error(error);
    }
    fn file(&mut self) {
        self.sink.file();
    }
}

/// The name stdin's objects are shown with.
pub const STDIN: &str = "<stdin>";

/// Reads every path: `-` is `stdin`, a directory is walked for `*.yaml`, `*.yml` and `*.json`
/// (sorted, so the output is stable), anything else is read as a file.
pub fn load_paths(paths: &[String], stdin: &mut dyn Read) -> Loaded {
    let mut loaded = Loaded::default();
    read_paths(paths, stdin, &mut loaded);
    loaded
}

/// [`load_paths`] into a [`Sink`]: every object is handed over as soon as its file is parsed,
/// in input order. Files are parsed on up to [`READERS`] threads (parsing YAML is most of a
/// check's time); the sink still receives everything in the order of the input, so the
/// result does not depend on the number of threads.
pub fn read_paths(paths: &[String], stdin: &mut dyn Read, loaded: &mut dyn Sink) {
    read_paths_prepared(paths, stdin, &|object| object, loaded)
}

/// [`read_paths`], each object passed through `prepare` on the thread that parsed it (stdin's
/// on the calling thread) before the sink receives it, in input order.
pub fn read_paths_prepared<T: Send>(
    paths: &[String],
    stdin: &mut dyn Read,
    prepare: &(dyn Fn(Object) -> T + Sync),
    sink: &mut dyn Sink<T>,
) {
    let readers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(READERS);
    read_paths_prepared_on(paths, stdin, prepare, sink, readers)
}

/// [`read_paths`] on at most `readers` threads.
pub fn read_paths_on(
    paths: &[String],
    stdin: &mut dyn Read,
    loaded: &mut dyn Sink,
    readers: usize,
) {
    read_paths_prepared_on(paths, stdin, &|object| object, loaded, readers)
}

/// [`read_paths_prepared`] on at most `readers` threads.
pub fn read_paths_prepared_on<T: Send>(
    paths: &[String],
    stdin: &mut dyn Read,
    prepare: &(dyn Fn(Object) -> T + Sync),
    sink: &mut dyn Sink<T>,
    readers: usize,
) {
    let inputs = inputs(paths);
    let files: Vec<&Path> = inputs
        .iter()
        .filter_map(|input| match input {
            Input::File(path) => Some(path.as_path()),
            _ => None,
        })
        .collect();
    let readers = readers.min(files.len());
    let mut sink = Preparing { prepare, sink };
    if readers <= 1 {
        return replay(&inputs, stdin, &mut sink, |path, sink| {
            load_file(path, sink)
        });
    }
    std::thread::scope(|scope| {
        // Reader `r` parses the files r, r + readers, r + 2 × readers, …; a bounded channel
        // each keeps at most a few parsed files waiting, so memory does not grow with the input.
        let receivers: Vec<_> = (0..readers)
            .map(|r| {
                let (send, receive) = std::sync::mpsc::sync_channel::<Loaded<T>>(4);
                let mine: Vec<&Path> = files.iter().skip(r).step_by(readers).copied().collect();
                scope.spawn(move || {
                    for path in mine {
                        let mut parsed = Loaded::default();
                        load_file(
                            path,
                            &mut Preparing {
                                prepare,
                                sink: &mut parsed,
                            },
                        );
                        if send.send(parsed).is_err() {
                            return;
                        }
                    }
                });
                receive
            })
            .collect();
        let mut next = 0usize;
        // Stdin's objects are parsed and prepared on this thread.
        replay(&inputs, stdin, &mut sink, |_, Preparing { sink, .. }| {
            let parsed = receivers[next % readers]
                .recv()
                .expect("a reader thread parses every file it is given");
            next += 1;
            let Loaded {
                objects,
                errors,
                files,
            } = parsed;
            for _ in 0..files {
                sink.file();
            }
            for error in errors {
                sink.error(error);
            }
            for object in objects {
                sink.object(object);
            }
        });
    });
}

/// The most threads that parse files at once.
pub const READERS: usize = 4;

/// One input, in the order of the command line (a directory's files sorted).
enum Input {
    Stdin,
    File(PathBuf),
    /// A directory that could not be read (whole or in part).
    Error(InputError),
}

fn inputs(paths: &[String]) -> Vec<Input> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let path = Path::new(path);
        if path.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = walk(path, &mut files) {
                inputs.push(Input::Error(InputError {
                    file: path.display().to_string(),
                    line: None,
                    reason: format!("cannot read directory: {e}"),
                }));
            }
            files.sort();
            inputs.extend(files.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path.to_path_buf()));
        }
    }
    inputs
}

/// Hands the inputs to the sink in order; `file` delivers one file's objects and errors.
fn replay<S: Sink>(
    inputs: &[Input],
    stdin: &mut dyn Read,
    loaded: &mut S,
    mut file: impl FnMut(&Path, &mut S),
) {
    for input in inputs {
        match input {
            Input::Stdin => {
                let mut text = String::new();
                loaded.file();
                match stdin.read_to_string(&mut text) {
                    Ok(_) => read_text(STDIN, &text, sniff_json(&text), loaded),
                    Err(e) => loaded.error(InputError {
                        file: STDIN.into(),
                        line: None,
                        reason: format!("cannot read: {e}"),
                    }),
                }
            }
            Input::File(path) => file(path, loaded),
            Input::Error(error) => loaded.error(error.clone()),
        }
    }
}

fn manifest_extension(path: &Path) -> Option<&str> {
    path.extension()
        .and_then(|e| e.to_str())
        .filter(|e| matches!(*e, "yaml" | "yml" | "json"))
}

/// The manifest files under `dir`, recursively. Symbolic links to directories are not
/// followed (no cycles); those to files are read.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if manifest_extension(&path).is_some()
            // The entry's type needs no system call (where the file system gives it); only a
            // link needs the file it points to.
            && (kind.is_file() || kind.is_symlink() && path.is_file())
        {
            out.push(path);
        }
    }
    Ok(())
}

fn load_file(path: &Path, loaded: &mut dyn Sink) {
    let name = path.display().to_string();
    loaded.file();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => {
                let json = manifest_extension(path) == Some("json");
                read_text(&name, &text, json, loaded)
            }
            Err(_) => loaded.error(InputError {
                file: name,
                line: None,
                reason: "not UTF-8 text".into(),
            }),
        },
        Err(e) => loaded.error(InputError {
            file: name,
            line: None,
            reason: format!("cannot read: {e}"),
        }),
    }
}

/// Whether text from stdin is JSON (a stream of JSON values) rather than YAML.
fn sniff_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// Reads the objects of one file's text into `loaded`.
pub fn load_text(file: &str, text: &str, json: bool, loaded: &mut Loaded) {
    read_text(file, text, json, loaded)
}

/// [`load_text`] into a [`Sink`].
pub fn read_text(file: &str, text: &str, json: bool, loaded: &mut dyn Sink) {
    let file: Arc<str> = file.into();
    if json {
        load_json(&file, text, loaded);
    } else {
        for doc in split_yaml(text) {
            load_yaml_document(&file, &doc, loaded);
        }
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The 1-based lines of byte offsets, counted once over the text when the offsets increase
/// (as a stream's values and a List's items do), so a long file costs one pass, not one per
/// object.
struct Lines<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines {
            text,
            offset: 0,
            line: 1,
        }
    }

    fn at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            return line_at(self.text, offset);
        }
        self.line += self.text.as_bytes()[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line
    }
}

/// The byte offset of `part` inside `whole` (`part` borrowed from it).
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// A `List`: `items` with the position of each item (borrowed from the text).
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

fn load_json(file: &Arc<str>, text: &str, loaded: &mut dyn Sink) {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    let mut lines = Lines::new(text);
    loop {
        match stream.next() {
            None => break,
            Some(Ok(raw)) => {
                let start = offset_in(text, raw.get());
                let line = lines.at(start);
                let value: Value = match serde_json::from_str(raw.get()) {
                    Ok(v) => v,
                    Err(e) => {
                        loaded.error(InputError {
                            file: file.to_string(),
                            line: Some(line + e.line().saturating_sub(1)),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                };
                let item_lines = if is_list(&value) {
                    serde_json::from_str::<RawList<'_>>(raw.get())
                        .ok()
                        .map(|list| {
                            list.items
                                .iter()
                                .map(|item| lines.at(offset_in(text, item.get())))
                                .collect()
                        })
                } else {
                    None
                };
                push_object(file, line, value, item_lines, loaded);
            }
            Some(Err(e)) => {
                // The stream cannot resume after a syntax error: the rest of this file is lost.
                loaded.error(InputError {
                    file: file.to_string(),
                    line: Some(e.line()),
                    reason: e.to_string(),
                });
                break;
            }
        }
    }
}

/// A `List` object (`kind: List`, or `<Kind>List` as `kubectl get -o yaml` writes) with items.
fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

/// Adds an object, or each item of a List (at `item_lines` when known, else at the List's
/// line). A document that is not an object is an error.
fn push_object(
    file: &Arc<str>,
    line: usize,
    value: Value,
    item_lines: Option<Vec<usize>>,
    loaded: &mut dyn Sink,
) {
    if is_list(&value) {
        let Value::Object(mut map) = value else {
            unreachable!("a List is an object")
        };
        let Some(Value::Array(items)) = map.remove("items") else {
            unreachable!("a List has items")
        };
        let lines = item_lines.filter(|l| l.len() == items.len());
        for (i, item) in items.into_iter().enumerate() {
            let item_line = lines.as_ref().map_or(line, |l| l[i]);
            // A List inside a List: its items' own lines are not known.
            push_object(file, item_line, item, None, loaded);
        }
        return;
    }
    if !value.is_object() {
        loaded.error(InputError {
            file: file.to_string(),
            line: Some(line),
            reason: "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
        });
        return;
    }
    loaded.object(Object {
        source: Source {
            file: file.clone(),
            line,
        },
        value,
    });
}

/// One YAML document: its text and the 1-based line its text starts at.
#[derive(Debug, PartialEq, Eq)]
pub struct Document<'a> {
    pub start: usize,
    /// The file's own text when it holds one document (no copy), else the document's lines.
    pub text: std::borrow::Cow<'a, str>,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Splits a YAML stream at `---` and `...` lines. A document marker at column 0 cannot be
/// content (YAML forbids it even inside block scalars), so the split is exact. Content after
/// `--- ` on the marker line stays in its document (the marker is blanked, columns kept).
pub fn split_yaml(text: &str) -> Vec<Document<'_>> {
    let marker = |raw: &str| {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        is_marker(line, "---") || is_marker(line, "...")
    };
    if !text.split_inclusive('\n').any(marker) {
        // One document, every line of it: the text itself (most manifests are one per file).
        return first_content_line(text)
            .map(|_| Document {
                start: 1,
                text: text.into(),
            })
            .into_iter()
            .collect();
    }
    let mut docs = Vec::new();
    let mut current = Document {
        start: 1,
        text: String::new().into(),
    };
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let number = i + 1;
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        if is_marker(line, "---") {
            docs.push(std::mem::replace(
                &mut current,
                Document {
                    start: number,
                    text: format!("   {}\n", &line[3..]).into(),
                },
            ));
        } else if is_marker(line, "...") {
            docs.push(std::mem::replace(
                &mut current,
                Document {
                    start: number + 1,
                    text: String::new().into(),
                },
            ));
        } else {
            current.text.to_mut().push_str(raw);
        }
    }
    docs.push(current);
    docs.retain(|d| first_content_line(&d.text).is_some());
    docs
}

/// The 0-based index of the first line that is neither blank, a comment nor a directive.
fn first_content_line(text: &str) -> Option<usize> {
    text.lines().position(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && !l.starts_with('%')
    })
}

fn load_yaml_document(file: &Arc<str>, doc: &Document, loaded: &mut dyn Sink) {
    let content = first_content_line(&doc.text).unwrap_or(0);
    let line = doc.start + content;
    let value: Value = match serde_yaml::from_str(&doc.text) {
        Ok(v) => v,
        Err(e) => {
            let at = e
                .location()
                .map_or(line, |l| doc.start + l.line().saturating_sub(1));
            loaded.error(InputError {
                file: file.to_string(),
                line: Some(at),
                reason: shift_lines(&e.to_string(), doc.start - 1),
            });
            return;
        }
    };
    if value.is_null() {
        return;
    }
    let item_lines = if is_list(&value) {
        yaml_list_item_lines(&doc.text)
            .map(|lines| lines.into_iter().map(|l| doc.start + l).collect::<Vec<_>>())
    } else {
        None
    };
    push_object(file, line, value, item_lines, loaded);
}

/// The 0-based lines where the items of a block-style top-level `items:` sequence start
/// (each `- ` at the sequence's column). `None` when the list is not in that shape (flow
/// style); the caller also drops the lines unless they count exactly the items parsed, so a
/// guess is never shown as a location.
fn yaml_list_item_lines(text: &str) -> Option<Vec<usize>> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.iter().position(|l| {
        l.strip_prefix("items:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    })?;
    let mut column = None;
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(key + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match column {
            None if is_item => {
                column = Some(indent);
                starts.push(i);
            }
            None => return None,
            Some(c) if indent == c && is_item => starts.push(i),
            Some(c) if indent > c => {}
            // Back at the key's level (or less): the sequence is over.
            Some(_) => break,
        }
    }
    Some(starts)
}

/// The parser's message with every `line N` (counted within the document) moved by `offset`
/// to count within the file.
pub fn shift_lines(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

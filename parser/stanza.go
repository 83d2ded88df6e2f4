package parser

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// ParseInterfaces reads the groups defined in one ifupdown interfaces(5) file. `source` and
// `source-directory` lines are followed (relative to the directory of name), so the groups of included
// files come back too, in reading order, with their own file names in positions. Stanzas without
// fakenet, table or rspec belong to someone else and are skipped unread. Each group is checked on its
// own; checks across groups are Validate's.
func ParseInterfaces(name string, data []byte) ([]Group, error) {
	l := &loader{}
	return l.interfaces(name, data)
}

// loader carries what reading nested files needs: the permission policy and the chain of files being
// read, which catches include loops.
type loader struct {
	checkPerms bool
	noIncludes bool // never touch the file system (fuzzing)
	stack      []string
}

const maxIncludeDepth = 16

// lline is a logical line: physical lines joined by trailing backslashes, ifupdown style.
type lline struct {
	line  int // the physical line it starts on
	text  string
	segs  []seg // where each physical line starts in text, to map offsets back to lines
	words []word
}

type seg struct {
	off  int
	line int
}

func (l *lline) lineAt(off int) int {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].off > off })
	if i == 0 {
		return l.line
	}
	return l.segs[i-1].line
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' }

// splitLines follows ifupdown's reader: a line whose first non-blank character is '#' is a comment,
// checked only where a logical line starts (a '#' line inside a continuation is text, as ifupdown sees
// it); a backslash that is the very last character joins the next physical line as it is. A lone '\r'
// before the newline is dropped so that CRLF files read the same.
func splitLines(file string, data []byte) []lline {
	phys := strings.Split(string(data), "\n")
	var out []lline
	for i := 0; i < len(phys); i++ {
		s := strings.TrimSuffix(phys[i], "\r")
		s = strings.TrimLeftFunc(s, func(r rune) bool { return r < utf8.RuneSelf && isSpace(byte(r)) })
		if s == "" || s[0] == '#' {
			continue
		}
		ll := lline{line: i + 1}
		buf := []byte(s)
		for len(buf) > 0 && buf[len(buf)-1] == '\\' {
			buf = buf[:len(buf)-1]
			if i+1 >= len(phys) {
				break
			}
			i++
			ll.segs = append(ll.segs, seg{off: len(buf), line: i + 1})
			buf = append(buf, strings.TrimSuffix(phys[i], "\r")...)
		}
		ll.text = string(buf)
		ll.words = splitWords(&ll, file)
		if len(ll.words) > 0 {
			out = append(out, ll)
		}
	}
	return out
}

func splitWords(ll *lline, file string) []word {
	var ws []word
	t := ll.text
	for i := 0; i < len(t); {
		if isSpace(t[i]) {
			i++
			continue
		}
		j := i
		for j < len(t) && !isSpace(t[j]) {
			j++
		}
		ws = append(ws, word{s: t[i:j], pos: Pos{File: file, Line: ll.lineAt(i)}})
		i = j
	}
	return ws
}

// stanzaStart tells whether a line's first word ends the current stanza.
func stanzaStart(kw string) bool {
	switch kw {
	case "iface", "mapping", "auto", "source", "source-directory", "no-auto-down", "no-scripts", "rename":
		return true
	}
	return strings.HasPrefix(kw, "allow-")
}

// stanza is one iface stanza as read: its file, its iface line and its option lines.
type stanza struct {
	file  string
	lines []lline
}

// interfaces reads the groups of one interfaces file and the files it includes: every iface stanza is
// collected first, in reading order, so that `inherits` can find its template wherever it was read; then
// each stanza that carries our options, itself or through its template, becomes a group. A stanza some
// other stanza inherits from is a template, never a group of its own (ifupdown brings up the stanzas that
// inherit it, not it).
func (l *loader) interfaces(name string, data []byte) ([]Group, error) {
	var all []stanza
	if err := l.collect(name, data, &all); err != nil {
		return nil, err
	}
	templates := map[string]bool{}
	resolved := make([]stanza, 0, len(all))
	for i, st := range all {
		r, tmpl, err := inherit(st, resolved[:i])
		if err != nil {
			return nil, err
		}
		if tmpl != "" {
			templates[tmpl] = true
		}
		resolved = append(resolved, r)
	}
	var groups []Group
	for _, st := range resolved {
		if templates[stanzaKey(st.lines[0])] {
			continue
		}
		g, ours, err := stanzaGroup(st.file, st.lines)
		if err != nil {
			return nil, err
		}
		if ours {
			groups = append(groups, g)
		}
	}
	return groups, nil
}

// stanzaKey names an iface stanza by its iface and family, as `inherits` finds templates.
func stanzaKey(head lline) string {
	if len(head.words) < 3 {
		return ""
	}
	return head.words[1].s + " " + head.words[2].s
}

// inherit resolves `iface NAME FAMILY METHOD inherits TEMPLATE` as ifupdown does: the template is the
// last stanza read before it with that name and the same family, and lends it every option the stanza
// does not give itself (a repeatable option, such as rspec, adds the template's values first). before are
// the stanzas read before it, resolved already, so a template may inherit from another. The result's head
// line drops the two words; tmpl is the template's key, "" when none.
func inherit(st stanza, before []stanza) (out stanza, tmpl string, err error) {
	head := st.lines[0]
	if len(head.words) != 6 || head.words[4].s != "inherits" {
		return st, "", nil
	}
	key := head.words[5].s + " " + head.words[2].s
	var t *stanza
	for i := len(before) - 1; i >= 0; i-- {
		if stanzaKey(before[i].lines[0]) == key {
			t = &before[i]
			break
		}
	}
	hp := Pos{File: st.file, Line: head.line}
	if t == nil {
		return st, "", errAt(hp, "iface %s inherits %s: no iface %s %s stanza is read before it", head.words[1].s, head.words[5].s, head.words[5].s, head.words[2].s)
	}
	own := map[string]bool{}
	for _, ll := range st.lines[1:] {
		own[strings.ToLower(ll.words[0].s)] = true
	}
	h := head
	h.words = head.words[:4]
	out = stanza{file: st.file, lines: []lline{h}}
	for _, ll := range t.lines[1:] {
		name := strings.ToLower(ll.words[0].s)
		if own[name] && !repeatable[name] {
			continue
		}
		out.lines = append(out.lines, ll)
	}
	out.lines = append(out.lines, st.lines[1:]...)
	return out, key, nil
}

// collect appends the iface stanzas of file name, and of the files it includes, to all.
func (l *loader) collect(name string, data []byte, all *[]stanza) error {
	if len(data) > maxFileSize {
		return tooLarge(name, int64(len(data)))
	}
	l.stack = append(l.stack, canonical(name))
	defer func() { l.stack = l.stack[:len(l.stack)-1] }()

	var cur []lline // the current iface stanza: its iface line, then its option lines
	flush := func() {
		if cur != nil {
			*all = append(*all, stanza{file: name, lines: cur})
			cur = nil
		}
	}
	for _, ll := range splitLines(name, data) {
		kw := ll.words[0].s
		if !stanzaStart(kw) {
			if cur != nil {
				cur = append(cur, ll)
			}
			continue // options of mapping stanzas, or stray lines: ifupdown's business
		}
		flush()
		switch kw {
		case "iface":
			cur = []lline{ll}
		case "source", "source-directory":
			if err := l.include(name, ll, all); err != nil {
				return err
			}
		}
	}
	flush()
	return nil
}

var sourceDirName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func (l *loader) include(name string, ll lline, all *[]stanza) error {
	kw := ll.words[0].s
	pos := Pos{File: name, Line: ll.line}
	if len(ll.words) != 2 {
		return errAt(pos, "%s: expected one path", kw)
	}
	if l.noIncludes {
		return nil
	}
	arg := ll.words[1].s
	if !filepath.IsAbs(arg) {
		arg = filepath.Join(filepath.Dir(name), arg)
	}
	var files []string
	if kw == "source" {
		m, err := filepath.Glob(arg)
		if err != nil {
			return errAt(pos, "source %q: bad pattern: %v", ll.words[1].s, err)
		}
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil && fi.IsDir() {
				continue
			}
			files = append(files, f)
		}
	} else {
		// the directory path may hold shell wildcards, the names of the files in it may not
		dirs, err := filepath.Glob(arg)
		if err != nil {
			return errAt(pos, "source-directory %q: bad pattern: %v", ll.words[1].s, err)
		}
		for _, dir := range dirs {
			ents, err := os.ReadDir(dir)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				return errAt(pos, "source-directory %s: %v", dir, unwrapPath(err))
			}
			if l.checkPerms {
				if err := checkMode(dir); err != nil {
					return err
				}
			}
			for _, e := range ents { // ReadDir sorts by name
				if !sourceDirName.MatchString(e.Name()) {
					continue
				}
				f := filepath.Join(dir, e.Name())
				if fi, err := os.Stat(f); err == nil && fi.IsDir() {
					continue
				}
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		c := canonical(f)
		for _, s := range l.stack {
			if s == c {
				return errAt(pos, "%s %s: include loop (%s is already being read)", kw, ll.words[1].s, f)
			}
		}
		if len(l.stack) >= maxIncludeDepth {
			return errAt(pos, "%s %s: includes nested deeper than %d files", kw, ll.words[1].s, maxIncludeDepth)
		}
		data, err := readConfig(f, l.checkPerms)
		if err != nil {
			return err
		}
		if err := l.collect(f, data, all); err != nil {
			return err
		}
	}
	return nil
}

func canonical(name string) string {
	if a, err := filepath.Abs(name); err == nil {
		name = a
	}
	if r, err := filepath.EvalSymlinks(name); err == nil {
		name = r
	}
	return name
}

// stanzaGroup turns an iface stanza into a group if it carries our options; ours reports whether it did.
func stanzaGroup(file string, lines []lline) (g Group, ours bool, err error) {
	// option names are matched in lower case: ifupdown hands a hook every option as IF_<NAME IN UPPER
	// CASE>, so `Fakenet` reaches the hooks as `fakenet` does
	for _, ll := range lines[1:] {
		for _, o := range ownership {
			if strings.ToLower(ll.words[0].s) == o {
				ours = true
			}
		}
	}
	if !ours {
		return Group{}, false, nil
	}
	// Only now is the stanza ours to judge: other people's stanzas may hold anything ifupdown accepts.
	for _, ll := range lines {
		if !utf8.ValidString(ll.text) {
			off := 0
			for off < len(ll.text) {
				r, n := utf8.DecodeRuneInString(ll.text[off:])
				if r == utf8.RuneError && n <= 1 {
					break
				}
				off += n
			}
			return Group{}, true, errAt(Pos{File: file, Line: ll.lineAt(off)}, "invalid UTF-8 in a linkagg stanza: expected text")
		}
	}
	head := lines[0]
	hp := Pos{File: file, Line: head.line}
	if len(head.words) != 4 {
		return Group{}, true, errAt(hp, "expected \"iface NAME inet|inet6 METHOD [inherits TEMPLATE]\", got %d words", len(head.words))
	}
	r := rawGroup{
		iface: head.words[1].s, method: head.words[3].s, source: "interfaces", pos: hp,
		missing: func(n string) string { return fmt.Sprintf("missing option %q", n) },
	}
	switch head.words[2].s {
	case "inet":
		r.family = Inet
	case "inet6":
		r.family = Inet6
	default:
		return Group{}, true, errAt(hp, "iface %s %s: linkagg options need family inet or inet6", r.iface, head.words[2].s)
	}
	first := map[string]Pos{}
	for _, ll := range lines[1:] {
		name := strings.ToLower(ll.words[0].s)
		p := Pos{File: file, Line: ll.line}
		if ourOptions[name] {
			if prev, ok := first[name]; ok && !repeatable[name] {
				return Group{}, true, errAt(p, "option %s given twice (first at %s): expected once", name, prev)
			}
			first[name] = p
			r.opts = append(r.opts, option{name: name, pos: p, words: ll.words[1:]})
			continue
		}
		if err := strayOption(name, p); err != nil {
			return Group{}, true, err
		}
	}
	g, err = build(&r)
	return g, true, err
}

// strayOption catches the two mistakes that would otherwise silently drop part of our configuration,
// since ifupdown accepts any option name: a broken continuation (an rspec entry or an address at the
// start of a line) and a misspelled linkagg option.
func strayOption(name string, p Pos) error {
	if c := name[0]; c == '[' || (c >= '0' && c <= '9') || strings.ContainsRune(name, ':') {
		return errAt(p, "option %q looks like the continuation of the previous line: expected a \\ as the last character of that line", name)
	}
	norm := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	for _, cand := range []string{norm, strings.TrimSuffix(norm, "s"), strings.ReplaceAll(norm, "-", "")} {
		for _, o := range []string{optFakenet, optTable, optRspec, optWeight, optMode, optFwmark, optMarkMask, optPriority, optARP, optGSO, optMinRTT, optSpeed} {
			if cand == o || cand == strings.ReplaceAll(o, "-", "") {
				return errAt(p, "unknown option %q: did you mean %q?", name, o)
			}
		}
	}
	return nil
}

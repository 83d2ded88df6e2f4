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

func (l *loader) interfaces(name string, data []byte) ([]Group, error) {
	if len(data) > maxFileSize {
		return nil, tooLarge(name, int64(len(data)))
	}
	l.stack = append(l.stack, canonical(name))
	defer func() { l.stack = l.stack[:len(l.stack)-1] }()

	var groups []Group
	var cur []lline // the current iface stanza: its iface line, then its option lines
	flush := func() error {
		if cur == nil {
			return nil
		}
		g, ours, err := stanzaGroup(name, cur)
		cur = nil
		if err != nil || !ours {
			return err
		}
		groups = append(groups, g)
		return nil
	}
	for _, ll := range splitLines(name, data) {
		kw := ll.words[0].s
		if !stanzaStart(kw) {
			if cur != nil {
				cur = append(cur, ll)
			}
			continue // options of mapping stanzas, or stray lines: ifupdown's business
		}
		if err := flush(); err != nil {
			return nil, err
		}
		switch kw {
		case "iface":
			cur = []lline{ll}
		case "source", "source-directory":
			gs, err := l.include(name, ll)
			if err != nil {
				return nil, err
			}
			groups = append(groups, gs...)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return groups, nil
}

var sourceDirName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func (l *loader) include(name string, ll lline) ([]Group, error) {
	kw := ll.words[0].s
	pos := Pos{File: name, Line: ll.line}
	if len(ll.words) != 2 {
		return nil, errAt(pos, "%s: expected one path", kw)
	}
	if l.noIncludes {
		return nil, nil
	}
	arg := ll.words[1].s
	if !filepath.IsAbs(arg) {
		arg = filepath.Join(filepath.Dir(name), arg)
	}
	var files []string
	if kw == "source" {
		m, err := filepath.Glob(arg)
		if err != nil {
			return nil, errAt(pos, "source %q: bad pattern: %v", ll.words[1].s, err)
		}
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil && fi.IsDir() {
				continue
			}
			files = append(files, f)
		}
	} else {
		ents, err := os.ReadDir(arg)
		if os.IsNotExist(err) {
			return nil, nil
		}
		if err != nil {
			return nil, errAt(pos, "source-directory %s: %v", arg, unwrapPath(err))
		}
		if l.checkPerms {
			if err := checkMode(arg); err != nil {
				return nil, err
			}
		}
		for _, e := range ents { // ReadDir sorts by name
			if !sourceDirName.MatchString(e.Name()) {
				continue
			}
			f := filepath.Join(arg, e.Name())
			if fi, err := os.Stat(f); err == nil && fi.IsDir() {
				continue
			}
			files = append(files, f)
		}
	}
	var groups []Group
	for _, f := range files {
		c := canonical(f)
		for _, s := range l.stack {
			if s == c {
				return nil, errAt(pos, "%s %s: include loop (%s is already being read)", kw, ll.words[1].s, f)
			}
		}
		if len(l.stack) >= maxIncludeDepth {
			return nil, errAt(pos, "%s %s: includes nested deeper than %d files", kw, ll.words[1].s, maxIncludeDepth)
		}
		data, err := readConfig(f, l.checkPerms)
		if err != nil {
			return nil, err
		}
		gs, err := l.interfaces(f, data)
		if err != nil {
			return nil, err
		}
		groups = append(groups, gs...)
	}
	return groups, nil
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
	for _, ll := range lines[1:] {
		for _, o := range ownership {
			if ll.words[0].s == o {
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
		return Group{}, true, errAt(hp, "expected \"iface NAME inet|inet6 METHOD\", got %d words", len(head.words))
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
		name := ll.words[0].s
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

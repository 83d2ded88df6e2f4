package parser

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// tomlKind is what a TOML key must hold; values are turned into the same words a stanza has, so both
// syntaxes share build().
type tomlKind int

const (
	kString tomlKind = iota
	kInt
	kIntOrString
	kStrings
	kInts
	kIntsOrStrings
	kStringOrStrings // one string or an array of strings (mptcp-transparent = "all" | ["ssh.service", ...])
)

var tomlKeys = map[string]tomlKind{
	optFamily: kString, optAddress: kString, optMTU: kInt, optFakenet: kStrings, optTable: kInts,
	optRspec: kStrings, optWeight: kInts, optMode: kString, optFwmark: kIntsOrStrings,
	optMarkMask: kIntOrString, optPriority: kInt, optARP: kString, optGSO: kInt, optMinRTT: kInt,
	optSpeed: kIntsOrStrings,
}

var tomlKeyList = "family, address, mtu, fakenet, table, rspec, weight, mode, fwmark, fwmark-mask, rule-priority, arp-isolation, gso-max-size, tcp-min-rtt-wlen, speed"

// ParseTOML reads the groups of one TOML drop-in: each top-level table is a group named by its iface.
// Unknown keys are errors (unlike stanzas, nobody else writes into these files).
func ParseTOML(name string, data []byte) ([]Group, error) {
	if len(data) > maxFileSize {
		return nil, tooLarge(name, int64(len(data)))
	}
	var root map[string]any
	md, err := toml.Decode(string(data), &root)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, errAt(Pos{File: name, Line: pe.Position.Line}, "TOML syntax: %s", pe.Message)
		}
		return nil, errAt(Pos{File: name}, "TOML: %v", err)
	}
	text := strings.Split(string(data), "\n")
	lines := scanTOMLLines(text)
	at := func(key ...string) Pos { // a key the scan missed (inside an inline table) gets its parent's line
		p := Pos{File: name, Key: strings.Join(key, ".")}
		for n := len(key); n > 0 && p.Line == 0; n-- {
			p.Line = lines[strings.Join(key[:n], "\x00")]
		}
		return p
	}
	// Groups in file order: root is an unordered map, and md.Keys() lists a table only when it was
	// written as one (not when implied by "tun0.mtu = 1" or "[tun0.x]"), so order by first mention.
	var order []string
	mentioned := map[string]bool{}
	for _, k := range md.Keys() {
		if !mentioned[k[0]] {
			mentioned[k[0]] = true
			order = append(order, k[0])
		}
	}
	if len(order) != len(root) {
		return nil, errAt(Pos{File: name}, "TOML: cannot tell the order of the tables") // not expected to happen
	}
	var groups []Group
	for _, iface := range order {
		gp := at(iface)
		tbl, ok := root[iface].(map[string]any)
		if !ok {
			return nil, errAt(gp, "key %q: expected a table [%s] describing a group", iface, iface)
		}
		for _, kk := range md.Keys() {
			if len(kk) == 2 && kk[0] == iface {
				if _, known := tomlKeys[kk[1]]; !known {
					return nil, errAt(at(kk...), "unknown key %q: expected one of %s", kk[1], tomlKeyList)
				}
			}
		}
		r := rawGroup{
			iface: iface, family: Inet, source: "toml", pos: gp,
			missing: func(n string) string { return fmt.Sprintf("missing key %q", n) },
		}
		for _, kk := range md.Keys() {
			if len(kk) != 2 || kk[0] != iface {
				continue
			}
			key := kk[1]
			op := at(iface, key)
			words, err := tomlWords(tbl[key], tomlKeys[key], op, text)
			if err != nil {
				return nil, err
			}
			if key == optFamily {
				switch words[0].s {
				case "inet":
				case "inet6":
					r.family = Inet6
				default:
					return nil, errAt(op, "family %q: expected \"inet\" or \"inet6\"", words[0].s)
				}
				continue
			}
			r.opts = append(r.opts, option{name: key, pos: op, words: words})
		}
		g, err := build(&r)
		if err != nil {
			return nil, err
		}
		groups = append(groups, g)
	}
	return groups, nil
}

func tomlWords(v any, kind tomlKind, op Pos, text []string) ([]word, error) {
	cursor := op.Line // array elements are written in order: search each from where the last was found
	scalar := func(v any, p Pos, ints, strs bool) (word, bool) {
		switch x := v.(type) {
		case int64:
			if ints {
				return word{s: strconv.FormatInt(x, 10), pos: p}, true
			}
		case string:
			if strs {
				if p.Line > 0 {
					if l := lineOfString(text, cursor, x); l > 0 {
						p.Line, cursor = l, l
					}
				}
				return word{s: x, pos: p}, true
			}
		}
		return word{}, false
	}
	if kind == kStringOrStrings {
		switch v.(type) {
		case string:
			kind = kString
		case []any:
			kind = kStrings
		default:
			return nil, errAt(op, "expected a string or an array of strings, got %s", tomlType(v))
		}
	}
	want := map[tomlKind]string{
		kString: "a string", kInt: "an integer", kIntOrString: "an integer or a string",
		kStrings: "an array of strings", kInts: "an array of integers", kIntsOrStrings: "an array of integers or strings",
	}[kind]
	ints := kind == kInt || kind == kInts || kind == kIntOrString || kind == kIntsOrStrings
	strs := kind == kString || kind == kStrings || kind == kIntOrString || kind == kIntsOrStrings
	if kind <= kIntOrString {
		w, ok := scalar(v, op, ints, strs)
		if !ok {
			return nil, errAt(op, "expected %s, got %s", want, tomlType(v))
		}
		return []word{w}, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, errAt(op, "expected %s, got %s", want, tomlType(v))
	}
	elem := map[tomlKind]string{kStrings: "a string", kInts: "an integer", kIntsOrStrings: "an integer or a string"}[kind]
	var out []word
	for i, e := range arr {
		p := op
		p.Key = fmt.Sprintf("%s[%d]", op.Key, i)
		w, ok := scalar(e, p, ints, strs)
		if !ok {
			return nil, errAt(p, "expected %s, got %s", elem, tomlType(e))
		}
		out = append(out, w)
	}
	return out, nil
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	}
	return fmt.Sprintf("%T", v)
}

// lineOfString finds the line (from line from on) holding the string literal s, so an error about one
// rspec entry of a multi-line array points at that entry; 0 if not found nearby (escapes, odd quoting).
func lineOfString(text []string, from int, s string) int {
	for i := from - 1; i >= 0 && i < len(text) && i < from+64; i++ { // bounded: a miss must not cost a full scan
		if strings.Contains(text[i], `"`+s+`"`) || strings.Contains(text[i], `'`+s+`'`) {
			return i + 1
		}
	}
	return 0
}

// scanTOMLLines maps key paths (parts joined by "\x00") to the line that first mentions them: the toml
// package keeps key positions to itself. It understands [table] headers and "key =" lines with bare or
// simply quoted keys, which covers what people write in these files; anything else gets line 0.
func scanTOMLLines(text []string) map[string]int {
	out := map[string]int{}
	var table []string
	for i, raw := range text {
		t := strings.TrimSpace(raw)
		if strings.HasPrefix(t, "[") {
			t = strings.TrimLeft(t, "[") // [[array.of.tables]] too
			end := strings.IndexByte(t, ']')
			if end < 0 {
				continue
			}
			table = parseTOMLKey(t[:end])
			if table != nil {
				if _, ok := out[strings.Join(table, "\x00")]; !ok {
					out[strings.Join(table, "\x00")] = i + 1
				}
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq <= 0 {
			continue
		}
		k := parseTOMLKey(t[:eq])
		if k == nil {
			continue
		}
		full := append(append([]string{}, table...), k...)
		for n := 1; n <= len(full); n++ { // an inline "tun0 = {…}" or dotted key also places its parents
			key := strings.Join(full[:n], "\x00")
			if _, ok := out[key]; !ok {
				out[key] = i + 1
			}
		}
	}
	return out
}

func parseTOMLKey(s string) []string {
	var parts []string
	for _, p := range strings.Split(s, ".") {
		p = strings.TrimSpace(p)
		if len(p) >= 2 && (p[0] == '"' && p[len(p)-1] == '"' || p[0] == '\'' && p[len(p)-1] == '\'') {
			p = p[1 : len(p)-1]
		} else if p == "" || strings.IndexFunc(p, func(r rune) bool {
			return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) >= 0 {
			return nil
		}
		parts = append(parts, p)
	}
	return parts
}

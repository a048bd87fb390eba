package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// linkRE matches inline markdown links and images, [text](target) and
// ![alt](target), with an optional "title" after the target. Link text may
// hold code spans but no nested brackets, which weft's documents do not use.
var linkRE = regexp.MustCompile(`!?\[([^\[\]]*)\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"]*")?\s*\)`)

// upPathRE matches a relative path that climbs with "../", in links and
// plain text alike: one that climbs out of the repository names something a
// user who clones weft does not have.
var upPathRE = regexp.MustCompile(`(?:\.\./)+[A-Za-z0-9_.\-/]*`)

// mdNameRE matches a markdown file's name in plain text: it must name a
// document of the repository, relative to the file or to the root.
var mdNameRE = regexp.MustCompile(`[A-Za-z0-9_.\-/]+\.md\b`)

// checkReferences returns a problem for every relative path in the text
// (code included, link targets aside: the link check covers those) that
// climbs out of root, and for every markdown file named in the prose that
// is in the repository neither beside path nor at root.
func checkReferences(root, path, text, prose string, exists func(string) bool) []string {
	var problems []string
	dir := filepath.Dir(path)
	for i, line := range strings.Split(linkRE.ReplaceAllString(text, "[$1]"), "\n") {
		for _, ref := range upPathRE.FindAllString(line, -1) {
			if rel, err := filepath.Rel(root, filepath.Join(dir, filepath.FromSlash(ref))); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				problems = append(problems, fmt.Sprintf("%s:%d: refers to %q, outside the repository", path, i+1, ref))
			}
		}
	}
	for i, line := range strings.Split(linkRE.ReplaceAllString(prose, "[$1]"), "\n") {
		for _, name := range mdNameRE.FindAllString(line, -1) {
			name = filepath.FromSlash(name)
			if !exists(filepath.Join(dir, name)) && !exists(filepath.Join(root, name)) {
				problems = append(problems, fmt.Sprintf("%s:%d: refers to %q, which is not in the repository", path, i+1, filepath.ToSlash(name)))
			}
		}
	}
	return problems
}

// fencedRE matches fenced code blocks, whose contents are not links.
var fencedRE = regexp.MustCompile("(?ms)^\\s*(```|~~~).*?^\\s*(```|~~~)\\s*$")

// codeSpanRE matches inline code spans, whose contents are not links.
var codeSpanRE = regexp.MustCompile("`[^`\n]*`")

// checkMarkdown returns a problem for every link in text (the content of
// the file at path, inside the repository rooted at root) whose relative
// target does not exist or lies outside root, for every same-file #anchor
// that matches no heading, and for every reference to something outside the
// repository. exists reports whether a path exists.
func checkMarkdown(root, path, text string, exists func(string) bool) []string {
	var problems []string
	anchors := headingSlugs(text)
	prose := fencedRE.ReplaceAllStringFunc(text, blankKeepLines)
	prose = codeSpanRE.ReplaceAllStringFunc(prose, blankKeepLines)
	problems = append(problems, checkReferences(root, path, text, prose, exists)...)
	for _, m := range linkRE.FindAllStringSubmatchIndex(prose, -1) {
		target := prose[m[4]:m[5]]
		line := 1 + strings.Count(prose[:m[0]], "\n")
		where := fmt.Sprintf("%s:%d: link %q", path, line, target)
		lower := strings.ToLower(target)
		switch {
		case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "https://"), strings.HasPrefix(lower, "mailto:"):
			continue
		case strings.HasPrefix(target, "#"):
			if !anchors[target[1:]] {
				problems = append(problems, where+": no heading with that anchor in this file")
			}
			continue
		case strings.Contains(target, "://"):
			problems = append(problems, where+": a scheme the checker does not allow")
			continue
		case filepath.IsAbs(target):
			problems = append(problems, where+": an absolute path")
			continue
		}
		file, _, _ := strings.Cut(target, "#")
		file, _, _ = strings.Cut(file, "?")
		abs := filepath.Clean(filepath.Join(filepath.Dir(path), filepath.FromSlash(file)))
		rel, err := filepath.Rel(root, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			problems = append(problems, where+": points outside the repository")
			continue
		}
		if !exists(abs) {
			problems = append(problems, where+": no such file or directory")
		}
	}
	return problems
}

// blankKeepLines replaces s with spaces, keeping its newlines, so that
// offsets and line numbers stay the same.
func blankKeepLines(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' {
			return r
		}
		return ' '
	}, s)
}

// headingSlugs returns the GitHub-style anchors of the ATX headings of text
// outside fenced code blocks: lower case, punctuation other than hyphens
// and underscores removed, spaces turned into hyphens, and -1, -2, ... added
// to repeats.
func headingSlugs(text string) map[string]bool {
	slugs := map[string]bool{}
	seen := map[string]int{}
	fence := false
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(t, "#") {
			continue
		}
		h := strings.TrimLeft(t, "#")
		if len(t)-len(h) > 6 || (h != "" && h[0] != ' ') {
			continue
		}
		slug := slugify(strings.TrimSpace(h))
		if n := seen[slug]; n > 0 {
			slugs[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			slugs[slug] = true
		}
		seen[slug]++
	}
	return slugs
}

func slugify(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_':
			b.WriteRune(r)
		case unicode.IsLetter(r), unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestLinks checks README.md and every docs/*.md of the repository.
func TestLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	if len(files) < 2 {
		t.Fatalf("found only %v: the docs are missing", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range checkMarkdown(root, f, string(b), fileExists) {
			rel, _ := filepath.Rel(root, f)
			t.Errorf("%s", strings.Replace(p, f, rel, 1))
		}
	}
}

// TestCheckerFindsProblems feeds the checker links it must report, and
// ones it must accept, so that TestLinks can fail.
func TestCheckerFindsProblems(t *testing.T) {
	root := filepath.FromSlash("/repo")
	present := map[string]bool{
		filepath.FromSlash("/repo/README.md"):         true,
		filepath.FromSlash("/repo/docs/design.md"):    true,
		filepath.FromSlash("/repo/docs/testing.md"):   true,
		filepath.FromSlash("/repo/deploy"):            true,
		filepath.FromSlash("/repo/docs/img/mesh.png"): true,
	}
	exists := func(p string) bool { return present[p] }
	md := strings.Join([]string{
		"# weft docs",        // 1
		"",                   // 2
		"## Files on a node", // 3
		"See [design](design.md) and [tests](testing.md#layers).",    // 4: fine
		"A [broken link](operations.md) here.",                       // 5: missing file
		"Up to the [readme](../README.md) and [deploy](../deploy/).", // 6: fine
		"![mesh](img/mesh.png) ![gone](img/gone.png)",                // 7: one missing image
		"[outside](../../etc/passwd)",                                // 8: outside the repository
		"[web](https://example.com/x) [mail](mailto:a@b.c)",          // 9: skipped
		"[here](#files-on-a-node) [nowhere](#no-such-heading)",       // 10: one bad anchor
		"Background in ../../notebook/PLAN.md and PLAN.md.",          // 11: three outside references
		"`[not a link](missing.md)`",                                 // 12: code span, ignored
		"```",                                                        // 13
		"[not a link either](missing.md)",                            // 14: fenced, ignored
		"```",                                                        // 15
	}, "\n")
	got := checkMarkdown(root, filepath.FromSlash("/repo/docs/x.md"), md, exists)
	want := []string{
		`x.md:5: link "operations.md": no such file`,
		`x.md:7: link "img/gone.png": no such file`,
		`x.md:8: link "../../etc/passwd": points outside the repository`,
		`x.md:10: link "#no-such-heading": no heading`,
		`x.md:11: refers to "../../notebook/PLAN.md", outside`,
		`x.md:11: refers to "../../notebook/PLAN.md", which is not`,
		`x.md:11: refers to "PLAN.md", which is not`,
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("problem %q not reported; got:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func TestSlugs(t *testing.T) {
	s := headingSlugs("# weft\n## Install on a cluster\n## Memory and GC settings\n### `weft status`, column by column\n## Install on a cluster\n```\n# not a heading\n```\n")
	for _, want := range []string{"weft", "install-on-a-cluster", "memory-and-gc-settings", "weft-status-column-by-column", "install-on-a-cluster-1"} {
		if !s[want] {
			t.Errorf("slug %q missing from %v", want, s)
		}
	}
	if s["not-a-heading"] {
		t.Errorf("a comment in a code block counted as a heading")
	}
}

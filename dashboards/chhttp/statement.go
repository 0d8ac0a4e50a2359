package chhttp

import (
	"fmt"
	"strings"
)

// token is one lexical token of a ClickHouse statement. Strings, quoted identifiers,
// heredocs and comments are recognised as ClickHouse's lexer recognises them, so that a
// keyword or a ';' inside them is never mistaken for SQL and none outside them is missed.
// Where the two could differ, this lexer sees more tokens, which can only refuse a query.
type token struct {
	text       string // as written; words are compared case-insensitively
	word       bool   // a bare word (keyword or identifier)
	start, end int
}

// readStatements are the statement kinds the endpoint runs. Anything else (INSERT, DROP,
// ALTER, SET, SYSTEM, ...) is refused before it reaches the engine.
var readStatements = map[string]bool{
	"SELECT": true, "WITH": true, "SHOW": true, "DESC": true, "DESCRIBE": true, "EXISTS": true, "EXPLAIN": true,
}

// statement is a checked read-only query: body is the SQL without its trailing FORMAT
// clause and ';', ready to take the endpoint's own SETTINGS clause; format is the FORMAT
// the SQL asked for ("" when none).
type statement struct {
	body   string
	format string
}

// parseStatement checks that sql is one read-only statement the endpoint may run and
// splits off its FORMAT clause.
func parseStatement(sql string) (statement, *Exception) {
	toks, err := lex(sql)
	if err != nil {
		return statement{}, exception(codeSyntaxError, "Syntax error: %v", err)
	}
	// Trailing ';' are allowed, as ClickHouse allows them; any other ';' starts a second statement.
	for len(toks) > 0 && toks[len(toks)-1].text == ";" {
		toks = toks[:len(toks)-1]
	}
	if len(toks) == 0 {
		return statement{}, exception(codeSyntaxError, "Empty query")
	}
	first := 0
	for first < len(toks) && toks[first].text == "(" {
		first++
	}
	if first == len(toks) || !toks[first].word || !readStatements[strings.ToUpper(toks[first].text)] {
		return statement{}, exception(codeReadonly, "%s: Cannot execute query in readonly mode: only SELECT, WITH, SHOW, DESCRIBE, EXISTS and EXPLAIN are allowed", readonlyUser)
	}
	for i, t := range toks {
		switch {
		case t.text == ";":
			return statement{}, exception(codeSyntaxError, "Syntax error (Multi-statements are not allowed): failed at position %d", t.start+1)
		case !t.word:
		// SETTINGS in the SQL could switch readonly off for a subquery: settings are taken
		// only as URL parameters, like a ClickHouse user with readonly=1.
		case strings.EqualFold(t.text, "SETTINGS") && (i == 0 || toks[i-1].text != "."):
			return statement{}, exception(codeReadonly, "%s: Cannot modify settings in readonly mode: pass settings as URL parameters", readonlyUser)
		// INTO OUTFILE writes a file where the engine runs, even in readonly mode.
		case strings.EqualFold(t.text, "OUTFILE"):
			return statement{}, exception(codeReadonly, "%s: Cannot execute query in readonly mode: INTO OUTFILE is not allowed", readonlyUser)
		}
	}
	st := statement{body: sql[:toks[len(toks)-1].end]}
	if n := len(toks); n >= 2 && toks[n-2].word && strings.EqualFold(toks[n-2].text, "FORMAT") && toks[n-1].word {
		st.format = toks[n-1].text
		st.body = sql[:toks[n-3].end] // n >= 3: the statement's first word precedes FORMAT
	}
	return st, nil
}

// lex splits sql into tokens, skipping whitespace and comments.
func lex(sql string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		// Comments as ClickHouse's lexer reads them: "--" and "# " or "#!" to the end of the
		// line, and block comments that nest.
		case strings.HasPrefix(sql[i:], "--") || strings.HasPrefix(sql[i:], "# ") || strings.HasPrefix(sql[i:], "#!"):
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case strings.HasPrefix(sql[i:], "/*"):
			start, depth := i, 0
			for {
				switch {
				case i+1 >= len(sql):
					return nil, fmt.Errorf("unterminated comment at position %d", start+1)
				case sql[i] == '/' && sql[i+1] == '*':
					depth++
					i += 2
				case sql[i] == '*' && sql[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
				if depth == 0 {
					break
				}
			}
		case c == '\'' || c == '"' || c == '`':
			end, err := quoted(sql, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{text: sql[i:end], start: i, end: end})
			i = end
		case c == '$':
			// A heredoc, as ClickHouse reads one: the tag runs from this '$' to the next
			// one, whatever lies between, and the heredoc ends at the tag's next occurrence.
			if k := strings.IndexByte(sql[i+1:], '$'); k >= 0 {
				tag := sql[i : i+k+2]
				if end := strings.Index(sql[i+len(tag):], tag); end >= 0 {
					end += i + 2*len(tag)
					toks = append(toks, token{text: sql[i:end], start: i, end: end})
					i = end
					continue
				}
			}
			toks = append(toks, token{text: "$", start: i, end: i + 1})
			i++
		case isWordByte(c):
			// ClickHouse's words may carry '$' after their first byte ("a$b$" is one word,
			// no heredoc).
			j := i
			for j < len(sql) && (isWordByte(sql[j]) || sql[j] == '$') {
				j++
			}
			toks = append(toks, token{text: sql[i:j], word: !isDigit(c), start: i, end: j})
			i = j
		default:
			toks = append(toks, token{text: sql[i : i+1], start: i, end: i + 1})
			i++
		}
	}
	return toks, nil
}

// quoted returns the end of the quoted string or identifier starting at sql[i]; ClickHouse
// escapes the quote both by doubling it and with a backslash.
func quoted(sql string, i int) (int, error) {
	q := sql[i]
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			j++
		case q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated quoted string at position %d", i+1)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isWordByte accepts identifier bytes; bytes >= 0x80 (UTF-8 letters) count as identifier
// bytes as in ClickHouse's lexer.
func isWordByte(c byte) bool {
	return c == '_' || isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80
}

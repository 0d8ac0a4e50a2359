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
	toks   []token // the statement's tokens, its FORMAT clause and ';' included
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
	st := statement{body: sql[:toks[len(toks)-1].end], toks: toks}
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

// The sandbox. The embedded engine runs as clickhouse-local, whose one user cannot be
// given a profile or grants and whose file() reads any path (user_files_path binds only a
// server). readonly=1 refuses most table functions that reach outside, but not the scalar
// file() or merge() over system tables. So each statement, as the engine itself
// re-serialized it, is checked here against what a dashboard needs.

// deniedFunctions are scalar functions that read outside the database (lower case; the
// engine re-serializes backquoted names bare). Introspection functions are off by setting.
var deniedFunctions = map[string]bool{
	"file":             true, // any file the process can read
	"catboostevaluate": true, // loads a model from a path
	"getserversetting": true, // the server's paths
}

// allowedTableFunctions are the table functions that only compute; every other table
// function the engine knows (file, url, s3, remote, merge, executable, ...) is refused.
var allowedTableFunctions = map[string]bool{
	"numbers": true, "numbers_mt": true, "zeros": true, "zeros_mt": true, "generateseries": true,
	"generate_series": true, "values": true, "view": true, "null": true, "format": true, "generaterandom": true,
}

// allowedSystemTables are the system tables a dashboard or Grafana's schema browser
// reads; the others (processes, stack_trace, query_log, disks, server_settings, ...)
// show the process, its host or other users' queries.
var allowedSystemTables = map[string]bool{
	"one": true, "numbers": true, "numbers_mt": true, "zeros": true, "zeros_mt": true,
	"databases": true, "tables": true, "columns": true, "functions": true, "table_functions": true,
	"formats": true, "data_type_families": true, "time_zones": true, "settings": true,
	"table_engines": true, "collations": true, "contributors": true, "data_skipping_indices": true,
	"aggregate_function_combinators": true,
}

// pathColumns are the columns of allowed system tables that hold host paths (where the
// data lives); pathTables are those tables.
var (
	pathColumns = map[string]bool{"data_path": true, "data_paths": true, "metadata_path": true}
	pathTables  = map[string]bool{"tables": true, "databases": true}
)

// allowedShow are the SHOW statements that list the schema (SHOW PROCESSLIST, GRANTS,
// SETTINGS, ... are not).
var allowedShow = map[string]bool{
	"DATABASES": true, "TABLES": true, "FULL": true, "EXTENDED": true, "COLUMNS": true, "FIELDS": true,
	"CREATE": true, "DICTIONARIES": true, "INDEX": true, "INDEXES": true, "INDICES": true, "KEYS": true, "TEMPORARY": true,
}

// name is a token as an identifier: a bare word, or a quoted one unquoted.
func (t token) name() string {
	if t.word {
		return t.text
	}
	if n := len(t.text); n >= 2 && (t.text[0] == '`' || t.text[0] == '"') && t.text[n-1] == t.text[0] {
		return t.text[1 : n-1]
	}
	return ""
}

// sandbox refuses a statement that calls a denied function or table function, reads a
// system table outside allowedSystemTables, or shows anything but the schema.
// tableFunctions are the table functions the engine knows, lower case.
func sandbox(toks []token, tableFunctions map[string]bool) *Exception {
	first := 0
	for first < len(toks) && toks[first].text == "(" {
		first++
	}
	if first+1 < len(toks) && strings.EqualFold(toks[first].text, "SHOW") && !allowedShow[strings.ToUpper(toks[first+1].name())] {
		return exception(codeReadonly, "%s: SHOW %s is not allowed: only the schema may be shown", readonlyUser, toks[first+1].text)
	}
	// A statement reading a table with path columns names its columns: no *, no
	// COLUMNS() matcher, none of the path columns.
	readsPaths := false
	for i := 0; i+2 < len(toks); i++ {
		if strings.EqualFold(toks[i].name(), "system") && toks[i+1].text == "." && pathTables[strings.ToLower(toks[i+2].name())] {
			readsPaths = true
		}
	}
	for i, t := range toks {
		n := strings.ToLower(t.name())
		if readsPaths && (t.text == "*" || pathColumns[n] || (n == "columns" && i+1 < len(toks) && toks[i+1].text == "(")) {
			return exception(codeAccessDenied, "%s: Not enough privileges: system.tables and system.databases are read by named columns, without * or the path columns", readonlyUser)
		}
		if n == "" || (i > 0 && toks[i-1].text == ".") {
			continue // not a name, or a column or table of a qualified name
		}
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1].text
		}
		switch {
		case next == "(" && deniedFunctions[n]:
			return exception(codeAccessDenied, "%s: Not enough privileges: function %s reads outside the database", readonlyUser, t.name())
		case next == "(" && tableFunctions[n] && !allowedTableFunctions[n]:
			return exception(codeAccessDenied, "%s: Not enough privileges: table function %s reads outside the database", readonlyUser, t.name())
		case next == "." && n == "system" && i+2 < len(toks) && !allowedSystemTables[strings.ToLower(toks[i+2].name())]:
			return exception(codeAccessDenied, "%s: Not enough privileges: system.%s is not readable here", readonlyUser, toks[i+2].name())
		}
	}
	return nil
}

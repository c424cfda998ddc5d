package api

// Route is one route the server answers, as the router matches it.
type Route struct{ Method, Pattern, Name string }

// Routes lists the routes s answers, from the router's own table, so that
// the contract test checks the document against what is served rather than
// against a second list that could drift.
func Routes(s *Server) []Route {
	s.Handler()
	out := make([]Route, len(s.routes))
	for i, r := range s.routes {
		out[i] = Route{r.method, r.pattern, r.name}
	}
	return out
}

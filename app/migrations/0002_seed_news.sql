-- A few first items so a fresh site shows something. Committed together with
-- this migration's record in schema_migrations: applied once, never twice.
INSERT INTO news (title, body, published_at) VALUES
  ('The castle path reopens',
   'After a winter of works, the path up to the ruins of Montaiguillon is open to walkers again.',
   '2024-03-02 09:00:00'),
  ('Village fête on the green',
   'Music, crêpes and a guided visit of the castle: see you on Saturday from 2 pm.',
   '2024-05-18 10:30:00'),
  ('New bench by the moat',
   'Thanks to the volunteers; the view on the towers is worth the climb.',
   '2024-06-07 17:15:00');

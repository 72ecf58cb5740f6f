// Options objects built from optional inputs (CLI flags, demo settings).

/** Without undefined fields, so that an unset option does not override a default when spread. */
export function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

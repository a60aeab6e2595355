"""The few writes every reply makes, as statements written once per model and database vendor.

A reply's two visits to the one database thread (chat/turns.py) insert a conversation, two
messages and a usage record, and update the reply. Django builds each of those statements anew
(its compiler, per field, every time: ~0.1 ms an INSERT); these functions run the same statements
with the SQL written once per (vendor, model, shape) and each value prepared by its own field as
Django's compiler prepares it (`field.pre_save(obj, add=True)`, then `get_db_prep_save`), so the
rows stored are the same. What they skip is what these models do not use: save signals (none is
connected to them; `tests/test_rows.py` holds that), expressions as values, and inheritance.
"""

from django.db import connections, router
from django.db.models.expressions import Col

_SQL = {}
_READERS = {}


def prep(model, name, value, connection):
    """Return `value` for the field `name` of `model` as a statement's parameter, as the ORM prepares it."""
    return model._meta.get_field(name).get_db_prep_save(value, connection)


def reader(field, connection):
    """Return a function turning `field`'s column, as the driver returns it, into the field's value
    (the ORM's converters for that column and vendor; built once per connection and field)."""
    key = (connection.alias, connection.vendor, field)
    read = _READERS.get(key)
    if read is None:
        col = Col(field.model._meta.db_table, field)
        converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)

        def read(value):
            for converter in converters:
                value = converter(value, col, connection)
            return value

        _READERS[key] = read
    return read


def _quoted(connection, model):
    q = connection.ops.quote_name
    return q, q(model._meta.db_table)


def insert(objs):
    """INSERT `objs` (unsaved instances of one model) in one statement; set their primary keys, as `save()` does."""
    model = type(objs[0])
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    key = (connection.vendor, "insert", model, len(objs))
    sql = _SQL.get(key)
    if sql is None:
        q, table = _quoted(connection, model)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = _SQL[key] = (f"INSERT INTO {table} ({', '.join(q(f.column) for f in fields)}) VALUES "
                           + ", ".join([row] * len(objs)) + f" RETURNING {table}.{q(model._meta.pk.column)}")
    params = []
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="insert")
        params += [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Primary keys grow in the order of VALUES on both vendors; RETURNING's order is not promised on SQLite.
        pks = sorted(pk for pk, in cursor.fetchall())
    for obj, pk in zip(objs, pks, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def update(model, pk, /, **values):
    """UPDATE the row `pk` of `model`, setting `values` (plain values of its fields); return the rows changed."""
    connection = connections[router.db_for_write(model)]
    names = tuple(values)
    key = (connection.vendor, "update", model, names)
    sql = _SQL.get(key)
    if sql is None:
        q, table = _quoted(connection, model)
        columns = ", ".join(f"{q(model._meta.get_field(name).column)} = %s" for name in names)
        sql = _SQL[key] = f"UPDATE {table} SET {columns} WHERE {table}.{q(model._meta.pk.column)} = %s"
    params = [prep(model, name, value, connection) for name, value in values.items()]
    params.append(model._meta.pk.get_db_prep_value(pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount

(function(){
var data=JSON.parse(document.getElementById('circuit-data').textContent);
var panel=document.getElementById('node-detail');
function el(tag,text,cls){var e=document.createElement(tag);if(text!==undefined)e.textContent=text;if(cls)e.className=cls;return e;}
function fmt(x){return (typeof x==='number')?x.toPrecision(3):String(x);}
function list(title,items){if(!items||!items.length)return;panel.appendChild(el('h4',title));var ul=el('ul');
items.forEach(function(it){ul.appendChild(el('li',it[0]+'  '+fmt(it[1])));});panel.appendChild(ul);}
function show(id){var d=data.details[id];panel.replaceChildren();if(!d){panel.appendChild(el('p','Click a node.'));return;}
panel.appendChild(el('h3',d.title));var facts=[];for(var k in d.facts)facts.push(k+' '+fmt(d.facts[k]));
panel.appendChild(el('p',facts.join(' \u00b7 ')));
if(d.contexts&&d.contexts.length){panel.appendChild(el('h4','Top activating contexts'));
d.contexts.forEach(function(c){var line=el('div',undefined,'ctx');line.appendChild(el('span',c.value.toFixed(2),'v'));
c.tokens.forEach(function(t,i){var s=el('span',t,i===c.centre?'hit':'');var a=Math.max(0,Math.min(1,c.acts[i]/c.value));
s.style.background='rgba(255,140,0,'+a.toFixed(3)+')';line.appendChild(s);});panel.appendChild(line);});}
list('Promotes',d.promoted);list('Suppresses',d.suppressed);list('Largest inputs',d.inputs);list('Largest outputs',d.outputs);}
var gd=document.getElementById('circuit-graph');
function attach(){gd.on('plotly_click',function(ev){var p=ev.points&&ev.points[0];if(p&&p.customdata!==undefined)show(p.customdata);});}
if(gd&&gd.on)attach();else window.addEventListener('load',attach);
show(data.initial);
})();
